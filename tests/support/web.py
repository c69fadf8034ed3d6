"""Signing in to the web app in tests: users with a password, a browser-like client, the CSRF token of a page."""
from __future__ import annotations

import re

from flask import Flask
from flask.testing import FlaskClient

from sequencer.testing.world import ALWAYS_OPEN
from sequencer.users import add_user, session_token
from sequencer.models import User

PASSWORD = "correct horse battery"
# The test config's base_url is https: cookies are Secure, and CSRF checks the Referer over https.
ORIGIN = "https://localhost"


def make_user(runtime, email: str, role: str, *, timezone: str = "UTC", password: str | None = PASSWORD) -> int:
    with runtime.session() as session:
        return add_user(session, email, role, timezone=timezone, password=password, now=runtime.now()).id


def browser(app: Flask) -> FlaskClient:
    """Return a client that keeps cookies and talks https from this site, as a browser on the app would."""
    # Flask's test client builds its URLs with the preferred scheme.
    app.config["PREFERRED_URL_SCHEME"] = "https"
    client = app.test_client()
    client.environ_base["HTTP_REFERER"] = f"{ORIGIN}/"
    return client


def signed_in(app: Flask, runtime, user_id: int) -> FlaskClient:
    """Return a browser whose session belongs to the user (as after /login, without paying for scrypt)."""
    client = browser(app)
    with runtime.session() as session:
        token = session_token(session.get(User, user_id))
    with client.session_transaction() as flask_session:
        flask_session["_user_id"] = token
        flask_session["_fresh"] = True
    return client


def csrf_token(client: FlaskClient, path: str = "/") -> str:
    """Return the CSRF token a page gives its forms (its meta tag, else its hidden field)."""
    page = client.get(path).get_data(as_text=True)
    found = (re.search(r'<meta name="csrf-token" content="([^"]+)"', page)
             or re.search(r'name="csrf_token" type="hidden" value="([^"]+)"', page)
             or re.search(r'type="hidden" name="csrf_token" value="([^"]+)"', page))
    assert found, f"{path} has no CSRF token"
    return found.group(1)


# A rep's working day for the work view and the browser: after an intro email, a scripted call
# (Ann), a threaded manual follow-up email (Ben) and a research to-do (Cal); Omar's lead Otto.
RITA, OMAR = "rita@acme.example", "omar@acme.example"
START = "2026-03-02T12:00:00Z"
_INTRO = """
[[steps]]
key = "intro"
channel = "email"
subject = "Hello {{ lead.first_name }}"
body = "Hi {{ lead.first_name }}, a short note about follow-ups."
"""
CADENCES = {
    "calls": ALWAYS_OPEN + _INTRO + """
[[steps]]
key = "discovery"
channel = "voice"
subject = "Discovery call"
template = "voice/discovery_call"
""",
    "followup": ALWAYS_OPEN + _INTRO + """
[[steps]]
key = "nudge"
channel = "email"
action = "manual"
thread = true
subject = "Following up"
body = "Hi {{ lead.first_name }}, did my note reach you?"
""",
    "todo": ALWAYS_OPEN + """
[[steps]]
key = "research"
channel = "task"
subject = "Research"
body = "Look up {{ lead.company }}."
""",
}
LEADS = f"""email,phone,first_name,last_name,company,title,owner
ann@alpha.example,+12125550101,Ann,Archer,Alpha,CTO,{RITA}
ben@beta.example,+12125550102,Ben,Baker,Beta,VP Sales,{RITA}
cal@gamma.example,+12125550103,Cal,Cole,Gamma,CEO,{RITA}
otto@omega.example,+12125550105,Otto,Olsen,Omega,COO,{OMAR}
"""
ENROLL = {"calls": ["ann@alpha.example", "otto@omega.example"], "followup": ["ben@beta.example"],
          "todo": ["cal@gamma.example"]}


def work_day(cli, tmp_path) -> None:
    """Build the day through the CLI at START: users, cadences, leads, and the worker run until the tasks open."""
    for email, name in ((RITA, "Rita Rep"), (OMAR, "Omar Rep")):
        cli("users", "add", email, "--role", "rep", "--name", name, "--timezone", "America/New_York",
            "--phone", "+12125550190", "--password-stdin", input=f"{PASSWORD}\n", now=START)
        cli("mailboxes", "add", email, "--owner", email, "--name", name, now=START)
    for name, text in CADENCES.items():
        path = tmp_path / f"{name}.toml"
        path.write_text(f'name = "{name}"\n' + text, encoding="utf-8")
        cli("cadence", "apply", str(path), now=START)
    leads = tmp_path / "leads.csv"
    leads.write_text(LEADS, encoding="utf-8")
    cli("leads", "import", str(leads), now=START)
    for cadence, emails in ENROLL.items():
        cli("enroll", "--cadence", cadence, *emails, now=START)
    for minute in range(3):  # the intro emails, then each second step opens its task
        cli("worker", "--once", now=f"2026-03-02T12:0{minute}:00Z")
