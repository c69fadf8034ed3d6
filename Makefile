# Two commands set everything up on a fresh machine: `make run` and `make test`.
VENV ?= .venv
PYTHON ?= python3
PY := $(VENV)/bin/python
SEQ := $(VENV)/bin/sequencer
DEMO := --config demo/config.toml
SINK_PORT ?= 1025
PORT ?= 8000
PYTEST_ARGS ?=

.PHONY: install run test bench screenshots clean

$(VENV)/.installed: setup.cfg plugins/email/setup.cfg plugins/sms/setup.cfg plugins/voice/setup.cfg
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e . -e plugins/email -e plugins/sms -e plugins/voice
	touch $@

$(VENV)/.installed-test: $(VENV)/.installed
	$(PY) -m pip install -q -e '.[test]'
	touch $@

install: $(VENV)/.installed

# Demo: migrate var/demo.db, load demo data, start the mail sink (var/outbox/) and the app with its scheduler.
run: install
	$(SEQ) $(DEMO) db upgrade
	$(SEQ) $(DEMO) demo load
	@$(SEQ) mailsink --port $(SINK_PORT) --outbox var/outbox & sink=$$!; \
	  trap 'kill $$sink 2>/dev/null' EXIT INT TERM; \
	  $(SEQ) $(DEMO) serve --port $(PORT)

test: $(VENV)/.installed-test
	$(PY) -m pytest -n 2 $(PYTEST_ARGS)

bench: $(VENV)/.installed-test
	$(PY) bench/dispatch.py
	$(PY) bench/tick_scale.py
	$(PY) bench/burst.py
	$(PY) bench/apscheduler_per_job.py
	$(PY) bench/today_page.py

# The README's pictures (Today, the call work view, the lead page at laptop and phone width), from a real browser.
screenshots: $(VENV)/.installed-test
	SEQUENCER_SCREENSHOTS=docs/screenshots $(PY) -m pytest tests/test_browser.py -q -k screenshots

clean:
	rm -rf $(VENV) var
