"""The WSGI entry point for gunicorn (`gunicorn sequencer.web.wsgi:app`); it never starts a scheduler."""
from __future__ import annotations

from sequencer.config import check_secret_for_serving, load_settings
from sequencer.web import create_app

_settings = load_settings()
# As `sequencer serve`: no demo or short secret key unless base_url is on this machine.
check_secret_for_serving(_settings)
# Workers run as separate `sequencer worker` processes next to gunicorn (DESIGN.md: Scale).
app = create_app(settings=_settings, start_scheduler=False)
