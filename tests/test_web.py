"""The web app: factory, /healthz, the overview and the RFC 8058 unsubscribe flow, on SQLite and PostgreSQL."""
from __future__ import annotations

from datetime import timedelta

import pytest
import sqlalchemy as sa

from sequencer import hookimpl, optouts
from sequencer.config import load_settings
from sequencer.models import Cadence, Enrollment, InboundEvent, Lead, Step, Suppression, Task, Touch
from sequencer.runtime import Runtime
from sequencer.web import create_app
from sequencer.web.unsubscribe import mask_email, mask_phone
from sequencer.testing import TEST_SECRET_KEY
from sequencer.testing.world import app_fixture, client_fixture, lead_id_fixture  # noqa: F401 - fixtures


def unsubscribe_path(runtime, lead_id: int) -> str:
    return f"/u/{optouts.unsubscribe_token(runtime.settings.web.secret_key, lead_id)}"


def state_of(runtime, lead_id: int) -> tuple:
    """Return (opted_out_at, suppressions, enrollment states, opt-out events) of a lead."""
    with runtime.session() as session:
        lead = session.get(Lead, lead_id)
        suppressions = sorted((s.kind, s.value) for s in session.scalars(sa.select(Suppression)))
        states = sorted(str(getattr(s, "value", s)) for s in session.scalars(
            sa.select(Enrollment.state).where(Enrollment.lead_id == lead_id)))
        events = session.scalar(sa.select(sa.func.count()).select_from(InboundEvent)
                                .where(InboundEvent.kind == "opt_out"))
        return lead.opted_out_at, suppressions, states, events


def test_factory_builds_from_settings_and_registers_plugin_blueprints(config_path, monkeypatch) -> None:
    from flask import Blueprint

    class WebPlugin:
        @hookimpl
        def register_blueprints(self, app):  # noqa: ANN001
            bp = Blueprint("hooks_testplugin", __name__, url_prefix="/hooks/testplugin")
            bp.add_url_rule("/ping", "ping", lambda: "pong")
            app.register_blueprint(bp)

    from sequencer.plugins import Plugins

    original_load = Plugins._load

    def load_with_test_plugin(self: Plugins) -> None:
        original_load(self)
        self.pm.register(WebPlugin(), name="testplugin")

    monkeypatch.setattr(Plugins, "_load", load_with_test_plugin)
    monkeypatch.setenv("SEQUENCER_CONFIG", str(config_path))
    app = create_app(test_config={"TESTING": True})
    runtime = app.extensions["sequencer"]
    try:
        assert isinstance(runtime, Runtime)
        assert runtime.settings.path == config_path.resolve()
        assert app.config["SECRET_KEY"] == TEST_SECRET_KEY
        assert app.testing
        client = app.test_client()
        assert client.get("/hooks/testplugin/ping").get_data(as_text=True) == "pong"
        assert client.get("/healthz").json == {"status": "ok", "database": "ok"}
    finally:
        runtime.dispose()


def test_factory_accepts_settings(config_path) -> None:
    settings = load_settings(config_path)
    app = create_app(settings=settings)
    try:
        assert app.extensions["sequencer"].settings is settings
        assert "sequencer_scheduler" not in app.extensions
    finally:
        app.extensions["sequencer"].dispose()


def test_healthz(client) -> None:
    response = client.get("/healthz")
    assert response.status_code == 200
    assert response.json == {"status": "ok", "database": "ok"}


def test_healthz_reports_an_unreachable_database(settings, clock, tmp_path) -> None:
    # A SQLite file inside a directory that does not exist cannot be opened.
    engine = sa.create_engine(f"sqlite:///{tmp_path / 'missing' / 'nowhere.db'}")
    runtime = Runtime(settings, clock, engine=engine)
    try:
        response = create_app(runtime).test_client().get("/healthz")
    finally:
        runtime.dispose()
    assert response.status_code == 503
    assert response.json["status"] == "error"
    assert "OperationalError" in response.json["database"]


def test_overview_shows_cadences_and_counts_but_nothing_about_a_lead(runtime, client, lead_id) -> None:
    now = runtime.now()
    with runtime.session() as session:
        cadence = session.scalars(sa.select(Cadence).where(Cadence.name == "Outbound Q2")).one()
        session.add(Step(cadence_id=cadence.id, key="intro", position=0, channel="email", action="auto",
                         wait="0d", subject="Quick question"))
        session.add(Cadence(name="Outbound Q2", version=2, state="active", schedule={}, exit_rules={},
                            definition_hash="y", created_at=now))
        lead = session.get(Lead, lead_id)
        lead.first_name, lead.last_name, lead.phone, lead.company = "Janet", "Doerinsky", "+12125550199", "Acme Widgets"
        enrollment = session.scalars(sa.select(Enrollment).where(Enrollment.lead_id == lead_id)).one()
        touch = Touch(enrollment_id=enrollment.id, step_key="intro", lead_id=lead_id, channel="email",
                      status="sent", subject="Quick question about the Widget plan", body_text="Hi Janet",
                      sent_at=now, created_at=now, updated_at=now)
        session.add(touch)
        session.flush()
        session.add(Task(lead_id=lead_id, touch_id=touch.id, kind="reply", title="Reply from Janet Doerinsky",
                         due_at=now, created_at=now))
    response = client.get("/")
    assert response.status_code == 200
    page = response.get_data(as_text=True)
    assert "Outbound Q2" in page
    assert "v2" in page and "v1" not in page  # the latest version only
    assert "active</span> 1" in page  # enrollments by state
    assert "sent</span> 1" in page  # touches by channel and status
    assert "Open tasks: 1" in page
    # No login yet: nothing that names, reaches or quotes a lead.
    for private in ("Jane.Doe", "example.com", "Janet", "Doerinsky", "2125550199", "Acme Widgets",
                    "Widget plan", "Hi Janet"):
        assert private.lower() not in page.lower(), private
    assert "/static/sequencer.css" in page
    with client.get("/static/sequencer.css") as css:
        assert css.status_code == 200 and b"font-family" in css.data


def test_overview_without_data(client) -> None:
    page = client.get("/").get_data(as_text=True)
    assert "No cadences yet" in page and "No touches yet" in page


def test_get_shows_a_masked_confirm_page_and_changes_nothing(runtime, client, lead_id) -> None:
    before = state_of(runtime, lead_id)
    response = client.get(unsubscribe_path(runtime, lead_id))
    assert response.status_code == 200
    page = response.get_data(as_text=True)
    assert "Unsubscribe J***@Example.com from all messages?" in page
    assert 'method="post"' in page
    assert "Jane.Doe" not in page
    assert response.headers["Cache-Control"] == "no-store"
    assert client.head(unsubscribe_path(runtime, lead_id)).status_code == 200
    assert state_of(runtime, lead_id) == before == (None, [], ["active"], 0)


def test_one_click_post_without_cookies_opts_out_everywhere(runtime, client, lead_id) -> None:
    response = client.post(unsubscribe_path(runtime, lead_id), data={"List-Unsubscribe": "One-Click"})
    assert response.status_code == 200
    assert "You are unsubscribed" in response.get_data(as_text=True)
    assert "Set-Cookie" not in response.headers
    assert state_of(runtime, lead_id) == (
        runtime.now(), [("email", "jane.doe@example.com"), ("phone", "+14155552671")], ["opted_out"], 1)
    with runtime.session() as session:
        event = session.scalars(sa.select(InboundEvent)).one()
        assert (event.channel, event.lead_id, event.classification) == ("email", lead_id, {"source": "unsubscribe_link"})
        assert "one-click" in event.summary


def test_post_with_any_body_works(runtime, client, lead_id) -> None:
    response = client.post(unsubscribe_path(runtime, lead_id), data=b"\x00not a form",
                           content_type="application/octet-stream")
    assert response.status_code == 200
    assert state_of(runtime, lead_id)[2] == ["opted_out"]


def test_second_post_is_harmless(runtime, client, lead_id) -> None:
    path = unsubscribe_path(runtime, lead_id)
    assert client.post(path).status_code == 200
    first = state_of(runtime, lead_id)
    runtime.clock.advance(timedelta(minutes=5))
    second = client.post(path)
    assert second.status_code == 200
    assert "You are unsubscribed" in second.get_data(as_text=True)
    assert state_of(runtime, lead_id) == first
    # After the opt-out, the GET page no longer offers a button.
    assert "You are unsubscribed" in client.get(path).get_data(as_text=True)


def test_a_31_day_old_link_still_works(runtime, client, lead_id) -> None:
    path = unsubscribe_path(runtime, lead_id)  # made when the email was sent
    runtime.clock.advance(timedelta(days=31))
    assert client.get(path).status_code == 200
    assert client.post(path).status_code == 200
    opted_out_at, _, states, _ = state_of(runtime, lead_id)
    assert opted_out_at == runtime.now()
    assert states == ["opted_out"]


@pytest.mark.parametrize("method", ["get", "post"])
def test_forged_or_garbled_token_is_rejected_without_change(runtime, client, lead_id, method) -> None:
    forged = optouts.unsubscribe_token("not-our-key", lead_id)
    genuine = optouts.unsubscribe_token(runtime.settings.web.secret_key, lead_id)
    for token in (forged, genuine[:-3] + "abc", "garbage"):
        response = getattr(client, method)(f"/u/{token}")
        assert response.status_code == 400
        assert "not valid" in response.get_data(as_text=True)
    assert state_of(runtime, lead_id) == (None, [], ["active"], 0)


def test_missing_or_erased_lead_is_a_harmless_200(runtime, client) -> None:
    path = unsubscribe_path(runtime, 999_999)
    assert "You are unsubscribed" in client.get(path).get_data(as_text=True)
    response = client.post(path)
    assert response.status_code == 200
    assert "You are unsubscribed" in response.get_data(as_text=True)
    with runtime.session() as session:
        assert session.scalar(sa.select(sa.func.count()).select_from(InboundEvent)) == 0


def test_phone_only_lead_sees_a_masked_number(runtime, client) -> None:
    with runtime.session() as session:
        lead = Lead(phone="+14155552671", created_at=runtime.now(), updated_at=runtime.now())
        session.add(lead)
    page = client.get(unsubscribe_path(runtime, lead.id)).get_data(as_text=True)
    assert "**********71" in page and "2671" not in page


def test_masking() -> None:
    assert mask_email("jane@example.com") == "j***@example.com"
    assert mask_email("x@a.io") == "x***@a.io"
    assert mask_phone("+14155552671") == "**********71"
    assert mask_phone(None) == "your contact details"
