"""The rep's day in a real browser: Debian's Chromium driven by Playwright against the app in a server thread.

The app serves a real SQLite database on a free loopback port and sends mail to a real SMTP sink.
Screenshots go to var/screenshots/ (untracked), or with SEQUENCER_SCREENSHOTS=DIR to DIR
(`make screenshots` writes the README's into docs/screenshots/).
"""
from __future__ import annotations

import os
import re
import threading
from pathlib import Path

import pytest
import sqlalchemy as sa

from sequencer.models import Call, CallObjection, Lead, Task
from sequencer.testing import REPO, unavailable
from sequencer.testing.world import messages_to
from sequencer.web import create_app
from tests.support.web import OMAR, PASSWORD, RITA, work_day

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]
# The innermost elements that end past the right edge of the screen (a table scrolls inside its own box).
WIDER_THAN_SCREEN = """() => Array.from(document.querySelectorAll('body *'))
  .filter(e => e.getBoundingClientRect().right > document.documentElement.clientWidth + 1
               && !e.closest('.overflow-auto') && ![...e.children].some(c => c.getBoundingClientRect().right >
               document.documentElement.clientWidth + 1))
  .map(e => e.tagName.toLowerCase() + (e.id ? '#' + e.id : '') + (e.className ? '.' + e.className : '') + ' '
            + Math.round(e.getBoundingClientRect().right))"""
LAPTOP, PHONE = {"width": 1280, "height": 800}, {"width": 390, "height": 844}
# Every SQLite-only test here: one browser run is slow enough; the PostgreSQL paths are the same code.
pytestmark = pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)


@pytest.fixture(scope="module")
def chromium():
    if not CHROMIUM.exists():
        unavailable(f"{CHROMIUM} is not installed (apt-get install -y chromium)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        unavailable("playwright is not installed (pip install -e '.[test]')")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True)
        yield browser
        browser.close()


@pytest.fixture
def server(runtime, cli, tmp_path):
    """The rep's day (tests.support.web.work_day), served over http on a free loopback port."""
    from werkzeug.serving import make_server

    work_day(cli, tmp_path)
    runtime.settings.web.base_url = "http://127.0.0.1"  # plain http: cookies without Secure, as on a laptop
    app = create_app(runtime, test_config={"TESTING": True})
    httpd = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_port}"
    httpd.shutdown()
    thread.join()


@pytest.fixture
def shots() -> Path:
    folder = Path(os.environ.get("SEQUENCER_SCREENSHOTS") or REPO / "var" / "screenshots")
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def sign_in(browser, base: str, email: str, viewport: dict = LAPTOP):
    page = browser.new_context(viewport=viewport).new_page()
    page.goto(f"{base}/login")
    page.fill("#email", email)
    page.fill("#password", PASSWORD)
    page.press("#password", "Enter")
    page.wait_for_url(f"{base}/")
    return page


def swapped_in(page, base: str, task_id: int) -> None:
    """Wait until htmx has swapped in the task and settled (work.js has then put the focus in it)."""
    page.wait_for_url(f"{base}/tasks/{task_id}")
    page.wait_for_selector(f'#work[data-task="{task_id}"]:not(.htmx-settling):not(.htmx-swapping)')


def counts(page) -> dict[str, str]:
    return {key: page.inner_text(f"#count-{key} strong") for key in ("call", "email", "sms", "other")}


def task_ids(runtime) -> dict[str, int]:
    with runtime.session() as session:
        return dict(session.execute(sa.select(Lead.email, Task.id).join(Task, Task.lead_id == Lead.id)).all())


def test_a_rep_works_three_tasks_in_a_row(chromium, server, runtime, smtp_sink, shots) -> None:
    tasks = task_ids(runtime)
    page = sign_in(chromium, server, RITA)
    assert counts(page) == {"call": "1", "email": "1", "sms": "0", "other": "1"}
    page.screenshot(path=shots / "browser-today-before.png", full_page=True)

    # 1. The call: two objections ticked, a fact, the disposition by its number key, saved with Ctrl+Enter.
    page.click(f'tr[data-task="{tasks["ann@alpha.example"]}"] td:nth-child(2) a')
    page.wait_for_selector("#outcome-form")
    assert "Discovery call with Ann Archer" in page.inner_text(".script")
    page.check('input[name="objection"][value="have_supplier"]')
    page.check('input[name="objection"][value="no_time"]')
    page.fill('input[name="fact_key"] >> nth=0', "team_size")
    page.fill('input[name="fact_value"] >> nth=0', "12")
    page.keyboard.press("Escape")  # out of the field, so keys are shortcuts
    page.keyboard.press("1")  # the first disposition
    assert page.input_value("#outcome") == runtime.settings.tasks.outcomes[0]
    page.screenshot(path=shots / "browser-call.png", full_page=True)
    page.keyboard.press("Control+Enter")
    # Without leaving the page: the next task is swapped in and the address follows.
    swapped_in(page, server, tasks["ben@beta.example"])
    assert page.locator(".notice").inner_text() == f"Task {tasks['ann@alpha.example']} done: connected."

    # 2. The manual email: edited and sent, in the thread of the intro email.
    page.fill("#body", "Ben, a thought after our chat: two minutes this week?")
    page.click("#save")
    swapped_in(page, server, tasks["cal@gamma.example"])
    intro, sent = messages_to(smtp_sink, "ben@beta.example")
    assert sent["In-Reply-To"] == intro["Message-ID"]
    assert "two minutes this week?" in sent.get_body(("plain",)).get_content()

    # 3. The research to-do: skipped with a reason, typed after the `s` key put the cursor there.
    page.keyboard.press("Escape")
    page.keyboard.press("s")
    page.keyboard.type("no website to research")
    page.click("#skip")
    page.wait_for_selector("text=Nothing left for today")

    page.goto(f"{server}/")
    assert counts(page) == {"call": "0", "email": "0", "sms": "0", "other": "0"}
    page.screenshot(path=shots / "browser-today-after.png", full_page=True)
    with runtime.session() as session:
        call = session.scalars(sa.select(Call)).one()
        assert sorted(session.scalars(sa.select(CallObjection.key))) == ["have_supplier", "no_time"]
        assert session.get(Lead, call.lead_id).custom == {"team_size": "12"}
        assert session.get(Task, tasks["cal@gamma.example"]).notes == "no website to research"

    # A second rep reaches neither the first rep's lead nor their task.
    other = sign_in(chromium, server, OMAR)
    assert other.goto(f"{server}/leads/{call.lead_id}").status == 404
    assert other.goto(f"{server}/tasks/{tasks['ann@alpha.example']}").status == 404


def test_the_page_counts_sms_segments_as_the_sms_plugin_does(chromium, server, runtime) -> None:
    segments = pytest.importorskip("sequencer_sms.segments")
    page = sign_in(chromium, server, RITA)
    samples = ["", "Hi", "a" * 160, "a" * 161, "€" * 80, "€" * 81, "[" * 77 + "a", "Привет" * 12, "Привет" * 11 + "!",
               "😀" * 35, "😀" * 36, "é" * 153 + "€", "ok 👍 see you"]
    for text in samples:
        expected = segments.count(text)
        found = page.evaluate("text => window.smsSegments(text)", text)
        assert found == {"encoding": expected.encoding, "units": expected.units, "count": expected.count}, text


def test_screenshots_at_laptop_and_phone_width(chromium, server, runtime, shots) -> None:
    """The pictures the README shows: Today, the call work view and the lead page, at both widths."""
    tasks = task_ids(runtime)
    for width, viewport in (("laptop", LAPTOP), ("phone", PHONE)):
        page = sign_in(chromium, server, RITA, viewport)
        shoot(page, shots / f"today-{width}.png", viewport)
        page.goto(f"{server}/tasks/{tasks['ann@alpha.example']}")
        shoot(page, shots / f"call-{width}.png", viewport)
        page.click("#lead-link")
        page.wait_for_url(re.compile(r".*/leads/\d+$"))
        shoot(page, shots / f"lead-{width}.png", viewport)


def shoot(page, path: Path, viewport: dict) -> None:
    page.screenshot(path=path, full_page=True)
    # Nothing wider than the screen: the page reads without scrolling sideways.
    too_wide = page.evaluate(WIDER_THAN_SCREEN)
    assert not too_wide, f"{path.name}: wider than the screen: {too_wide}"
