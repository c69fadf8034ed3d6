"""Signing in and out, the failure limit, CSRF, cookies, headers, and every route's answer for each role."""
from __future__ import annotations

from datetime import timedelta

import pytest
import sqlalchemy as sa
from flask import Blueprint

from sequencer import hookimpl, optouts
from sequencer.models import AuditEntry, Lead, LoginFailure, Task
from sequencer.runtime import Runtime
from sequencer.testing.world import make_lead
from sequencer.users import set_user
from sequencer.web import create_app
from sequencer.web.security import SECURITY_HEADERS, safe_next
from tests.support.web import ORIGIN, PASSWORD, browser, csrf_token, make_user, signed_in


@pytest.fixture
def app(runtime):
    return create_app(runtime, test_config={"TESTING": True})


@pytest.fixture
def rep_id(runtime) -> int:
    return make_user(runtime, "rita@example.com", "rep")


def sign_in(client, email: str, password: str, next_path: str | None = None):
    token = csrf_token(client, "/login")
    url = "/login" + (f"?next={next_path}" if next_path is not None else "")
    return client.post(url, data={"email": email, "password": password, "csrf_token": token})


def test_sign_in_goes_to_next_and_out_again(app, runtime, rep_id) -> None:
    client = browser(app)
    assert client.get("/leads/7?x=1").headers["Location"] == "/login?next=/leads/7?x%3D1"
    response = sign_in(client, "Rita@Example.com", PASSWORD, "/leads/7")
    assert response.status_code == 302 and response.headers["Location"] == "/leads/7"
    assert client.get("/").status_code == 200
    assert client.get("/login").headers["Location"] == "/"  # already signed in
    with runtime.session() as session:
        entry = session.scalars(sa.select(AuditEntry).where(AuditEntry.action == "user.sign_in")).one()
        assert (entry.actor, entry.object_id) == ("rita@example.com", str(rep_id))
    assert client.get("/logout").status_code == 405  # a link or an <img> cannot sign anyone out
    assert client.post("/logout", data={"csrf_token": csrf_token(client)}).headers["Location"] == "/login"
    assert client.get("/").status_code == 302


@pytest.mark.parametrize("email, password", [
    ("rita@example.com", "wrong password"),
    ("nobody@example.com", PASSWORD),
    ("deactivated@example.com", PASSWORD),
    ("no-password@example.com", ""),
])
def test_a_refused_sign_in_says_the_same_whatever_was_wrong(app, runtime, rep_id, email, password) -> None:
    make_user(runtime, "no-password@example.com", "rep", password=None)
    make_user(runtime, "deactivated@example.com", "rep")
    with runtime.session() as session:
        set_user(session, "deactivated@example.com", active=False)
    client = browser(app)
    response = sign_in(client, email, password or "anything-at-all")
    assert response.status_code == 401
    page = response.get_data(as_text=True)
    assert "Wrong email or password." in page
    assert email not in page.replace(f'value="{email}"', "")  # only echoed back in the field
    assert client.get("/").status_code == 302


def test_a_form_with_missing_fields_comes_back_with_the_reason_by_each(app) -> None:
    client = browser(app)
    response = client.post("/login", data={"email": "", "password": "", "csrf_token": csrf_token(client, "/login")})
    assert response.status_code == 400
    page = response.get_data(as_text=True)
    assert 'id="email-error" class="error">Enter your email address.' in page
    assert 'id="password-error" class="error">Enter your password.' in page
    assert 'aria-invalid="true"' in page


def test_five_failures_refuse_the_sixth_attempt_in_every_worker(app, runtime, rep_id, settings, clock) -> None:
    # A second app on its own runtime and engine stands for another worker process.
    other_runtime = Runtime(settings, clock)
    try:
        clients = [browser(app), browser(create_app(other_runtime, test_config={"TESTING": True}))]
        for attempt in range(5):
            assert sign_in(clients[attempt % 2], "rita@example.com", f"guess {attempt}").status_code == 401
        for client in clients:
            refused = sign_in(client, "RITA@example.com", PASSWORD)  # the right password, too late
            assert refused.status_code == 429
            assert "Too many failed sign-ins for this address. Try again in 15 min." in refused.get_data(as_text=True)
            assert 890 <= int(refused.headers["Retry-After"]) <= 901
        # Another address is not held up by Rita's failures.
        make_user(runtime, "ivan@example.com", "rep")
        assert sign_in(clients[0], "ivan@example.com", PASSWORD).status_code == 302
        clock.advance(timedelta(minutes=15, seconds=1))
        assert sign_in(clients[1], "rita@example.com", PASSWORD).status_code == 302
        with runtime.session() as session:
            # A success clears the address's failures; old ones of every address are pruned on a failure.
            assert session.scalar(sa.select(sa.func.count()).select_from(LoginFailure)) == 0
    finally:
        other_runtime.dispose()


@pytest.mark.parametrize("target", [
    "//evil.example/", "https://evil.example/", "/\\evil.example", "/\t/evil.example", "javascript:alert(1)",
    "evil.example", "http:/evil.example", "/%0a/evil.example\n",
])
def test_next_never_leaves_the_site(app, runtime, rep_id, target) -> None:
    assert safe_next(target) is None or not target.startswith(("/", "h", "j", "e"))
    client = browser(app)
    token = csrf_token(client, "/login")
    response = client.post("/login", query_string={"next": target},
                           data={"email": "rita@example.com", "password": PASSWORD, "csrf_token": token})
    assert response.headers["Location"] == "/"


def test_safe_next_keeps_paths_of_this_site() -> None:
    assert safe_next("/leads/3?tab=timeline#x") == "/leads/3?tab=timeline#x"
    assert safe_next("/") == "/"
    assert safe_next(None) is None and safe_next("") is None


def test_csrf_refuses_a_form_without_the_token_and_accepts_the_htmx_header(app, runtime, rep_id) -> None:
    client = browser(app)
    response = client.post("/login", data={"email": "rita@example.com", "password": PASSWORD})
    assert response.status_code == 400
    assert "The CSRF token is missing." in response.get_data(as_text=True)
    client = signed_in(app, runtime, rep_id)
    assert client.post("/logout").status_code == 400
    assert client.post("/logout", data={"csrf_token": "forged"}).status_code == 400
    # Another site's page cannot post even with a token (SSL-strict Referer check over https).
    token = csrf_token(client)
    assert client.post("/logout", data={"csrf_token": token},
                       headers={"Referer": "https://evil.example/"}).status_code == 400
    # htmx sends the token from the meta tag as X-CSRFToken (static/sequencer.js).
    assert client.post("/logout", headers={"X-CSRFToken": token}).status_code == 302


def test_webhooks_and_one_click_unsubscribe_need_no_token_or_session(runtime, monkeypatch) -> None:
    class HookPlugin:
        @hookimpl
        def register_blueprints(self, app):  # noqa: ANN001
            bp = Blueprint("hooks_probe", __name__, url_prefix="/hooks/probe")
            bp.add_url_rule("/event", "event", lambda: ("", 204), methods=["POST"])
            app.register_blueprint(bp)

    runtime.plugins.pm.register(HookPlugin(), name="hook-probe")
    app = create_app(runtime, test_config={"TESTING": True})
    client = app.test_client(use_cookies=False)
    assert client.post("/hooks/probe/event", data={"x": "1"}).status_code == 204
    # The email plugin's webhook answers for its own secret, not with CSRF's 400 or a sign-in redirect.
    assert client.post("/hooks/email/inbound", data=b"From: a@b\r\n\r\nhi").status_code == 403
    with runtime.session() as session:
        lead_id = make_lead(session, runtime.now()).id
    token = optouts.unsubscribe_token(runtime.settings.web.secret_key, lead_id)
    response = client.post(f"/u/{token}", data={"List-Unsubscribe": "One-Click"})
    assert response.status_code == 200 and "Set-Cookie" not in response.headers
    with runtime.session() as session:
        assert session.get(Lead, lead_id).opted_out_at == runtime.now()


def test_session_cookie_flags(app, runtime, rep_id, tmp_path) -> None:
    response = sign_in(browser(app), "rita@example.com", PASSWORD)
    cookie = response.headers["Set-Cookie"]
    assert "HttpOnly" in cookie and "SameSite=Lax" in cookie and "Secure" in cookie
    # Over plain http (a laptop demo) the cookie cannot be Secure, or the browser would never send it back.
    runtime.settings.web.base_url = "http://localhost:8000"
    plain = create_app(runtime, test_config={"TESTING": True}).test_client()
    token = csrf_token(plain, "/login")
    cookie = plain.post("/login", data={"email": "rita@example.com", "password": PASSWORD,
                                        "csrf_token": token}).headers["Set-Cookie"]
    assert "HttpOnly" in cookie and "SameSite=Lax" in cookie and "Secure" not in cookie


def test_a_new_password_or_deactivation_ends_existing_sessions(app, runtime, rep_id) -> None:
    client = signed_in(app, runtime, rep_id)
    assert client.get("/").status_code == 200
    with runtime.session() as session:
        set_user(session, "rita@example.com", password="a brand new password")
    assert client.get("/").status_code == 302
    client = signed_in(app, runtime, rep_id)
    with runtime.session() as session:
        set_user(session, "rita@example.com", active=False)
    assert client.get("/").status_code == 302


# Every route of the app, plugins' included, and its answer: without a session, then for each role.
# A route missing here fails the test, so each new page states who may reach it. Webhook rows of a
# plugin that is not installed are left out of the comparison.
ANON, REP, OPS, ADMIN = None, "rep", "ops", "admin"
EVERYONE = (ANON, REP, OPS, ADMIN)


def same_for_all(status: int) -> dict:
    return dict.fromkeys(EVERYONE, status)


EXPECTED = {
    ("/", "GET"): {ANON: 302, REP: 200, OPS: 200, ADMIN: 200},
    ("/login", "GET"): {ANON: 200, REP: 302, OPS: 302, ADMIN: 302},
    ("/login", "POST"): same_for_all(400),  # no CSRF token in the walk
    ("/logout", "POST"): {ANON: 302, REP: 400, OPS: 400, ADMIN: 400},
    ("/leads/<int:lead_id>", "GET"): {ANON: 302, REP: 200, OPS: 200, ADMIN: 200},
    ("/tasks/<int:task_id>", "GET"): {ANON: 302, REP: 200, OPS: 200, ADMIN: 200},
    # A rep's actions on a task: sent to sign in without a session, else refused without a CSRF token.
    **{(f"/tasks/<int:task_id>/{action}", "POST"): {ANON: 302, REP: 400, OPS: 400, ADMIN: 400}
       for action in ("done", "send", "snooze", "skip", "dial")},
    ("/overview", "GET"): {ANON: 302, REP: 403, OPS: 200, ADMIN: 200},
    ("/healthz", "GET"): same_for_all(200),
    ("/u/<token>", "GET"): same_for_all(200),
    ("/u/<token>", "POST"): same_for_all(200),
    ("/static/<path:filename>", "GET"): same_for_all(200),
    # Webhooks prove themselves by a secret or a signature, not a session: refused without, whoever asks.
    ("/hooks/email/inbound", "POST"): same_for_all(403),
    # The test config has no [plugins.sms] or [plugins.voice]: no auth token to check a signature with.
    ("/hooks/sms/inbound", "POST"): same_for_all(503),
    ("/hooks/sms/status", "POST"): same_for_all(503),
    ("/hooks/voice/bridge/<int:task_id>", "POST"): same_for_all(503),
    ("/hooks/voice/notice", "POST"): same_for_all(503),
    ("/hooks/voice/drop/<int:touch_id>", "POST"): same_for_all(503),
    ("/hooks/voice/played/<int:touch_id>", "POST"): same_for_all(503),
    ("/hooks/voice/status/<any(drop, dial):kind>", "POST"): same_for_all(503),
    ("/hooks/voice/recording", "POST"): same_for_all(503),
}


def test_every_route_answers_each_role_as_the_table_says(runtime, monkeypatch) -> None:
    monkeypatch.delenv("SEQUENCER_LOAD_PLUGINS")  # every installed plugin and its routes
    users = {role: make_user(runtime, f"{role}@example.com", role) for role in ("rep", "ops", "admin")}
    with runtime.session() as session:
        lead = make_lead(session, runtime.now())
        lead.owner_id = users["rep"]
        task = Task(owner_id=users["rep"], lead_id=lead.id, kind="call", title="Call", due_at=runtime.now(),
                    created_at=runtime.now())
        session.add(task)
        session.flush()
        values = {"lead_id": lead.id, "task_id": task.id, "touch_id": 1, "filename": "sequencer.css",
                  "token": optouts.unsubscribe_token(runtime.settings.web.secret_key, lead.id)}
    app = create_app(runtime, test_config={"TESTING": True})
    routes = {(rule.rule, method): rule for rule in app.url_map.iter_rules()
              for method in sorted(rule.methods - {"HEAD", "OPTIONS"})}
    missing = sorted(set(routes) - set(EXPECTED))
    assert not missing, f"add each new route to EXPECTED with its answer per role: {missing}"
    gone = sorted(key for key in set(EXPECTED) - set(routes) if not key[0].startswith("/hooks/"))
    assert not gone, f"these routes are no longer in the app; remove them from EXPECTED: {gone}"
    answers = {}
    for (path, method), rule in routes.items():
        arguments = {arg: values.get(arg) or sorted(getattr(rule._converters[arg], "items", ["1"]))[0]
                     for arg in rule.arguments}
        url = rule.build(arguments, append_unknown=False)[1]
        for role in EVERYONE:
            client = browser(app) if role is None else signed_in(app, runtime, users[role])
            response = client.open(url, method=method)
            response.close()  # a static file is streamed from an open file
            answers[(path, method, role)] = response.status_code
            for header, value in SECURITY_HEADERS.items():
                # The unsubscribe page keeps its stricter no-referrer.
                assert response.headers[header] == value or header == "Referrer-Policy", (path, method, header)
            assert response.headers["Referrer-Policy"] in ("same-origin", "no-referrer")
            if response.status_code == 302 and role is None and method == "GET":
                assert response.headers["Location"] == f"/login?next={url}", path
    expected = {(path, method, role): status for (path, method), by_role in EXPECTED.items()
                if (path, method) in routes for role, status in by_role.items()}
    assert answers == expected
