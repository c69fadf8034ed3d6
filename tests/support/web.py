"""Signing in to the web app in tests: users with a password, a browser-like client, the CSRF token of a page."""
from __future__ import annotations

import re

from flask import Flask
from flask.testing import FlaskClient

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
