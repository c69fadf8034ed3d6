"""The web app: factory, /healthz, Today, the lead page, the overview and the RFC 8058 unsubscribe flow."""
from __future__ import annotations

import re
from datetime import datetime, timedelta, timezone

import pytest
import sqlalchemy as sa

from sequencer import hookimpl, optouts
from sequencer.config import load_settings
from sequencer.consent import add_consent
from sequencer.models import (Call, CallObjection, Cadence, Enrollment, InboundEvent, Lead, Step, Suppression, Task,
                              Touch, User)
from sequencer.runtime import Runtime
from sequencer.tasks import follow_up
from sequencer.web import create_app
from sequencer.web.times import for_both, overdue, wall
from sequencer.web.today import arrange
from sequencer.web.unsubscribe import mask_email, mask_phone
from sequencer.testing import TEST_SECRET_KEY
from sequencer.testing.world import (app_fixture, client_fixture, lead_id_fixture, make_lead,  # noqa: F401
                                     messages_to)
from tests.support.web import OMAR, RITA, csrf_token, make_user, signed_in, work_day


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


def test_overview_shows_cadences_and_counts_but_nothing_about_a_lead(runtime, app, lead_id) -> None:
    client = signed_in(app, runtime, make_user(runtime, "ops@ops-team.example", "ops"))
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
    response = client.get("/overview")
    assert response.status_code == 200
    page = response.get_data(as_text=True)
    assert "Outbound Q2" in page
    assert "v2" in page and "v1" not in page  # the latest version only
    assert "active</span> 1" in page  # enrollments by state
    assert "sent</span> 1" in page  # touches by channel and status
    assert "Open tasks: 1" in page
    # Aggregates only: nothing that names, reaches or quotes a lead.
    for private in ("Jane.Doe", "example.com", "Janet", "Doerinsky", "2125550199", "Acme Widgets",
                    "Widget plan", "Hi Janet"):
        assert private.lower() not in page.lower(), private
    assert "/static/sequencer.css" in page and "/static/vendor/pico-2.1.1.min.css" in page
    for path, content in (("/static/sequencer.css", b"--pico-"), ("/static/vendor/pico-2.1.1.min.css", b"Pico CSS"),
                          ("/static/vendor/htmx-2.0.8.min.js", b"htmx"), ("/static/sequencer.js", b"X-CSRFToken")):
        with client.get(path) as asset:
            assert asset.status_code == 200 and content in asset.data, path


def test_overview_without_data(runtime, app) -> None:
    client = signed_in(app, runtime, make_user(runtime, "admin@example.com", "admin"))
    page = client.get("/overview").get_data(as_text=True)
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


# Today and the lead page. The clock is Monday 2 March 2026, 14:00 UTC: 09:00 in New York, 15:00 in Berlin.

def add_task(session, now, owner_id, lead_id, kind, due_at, *, state="open", title=None) -> int:
    task = Task(owner_id=owner_id, lead_id=lead_id, kind=kind, title=title or f"{kind} task", due_at=due_at,
                state=state, created_at=now - timedelta(days=3))
    session.add(task)
    session.flush()
    return task.id


def owned_lead(session, now, owner_id, email, *, zone=None, name=None, opted_out=False) -> Lead:
    lead = make_lead(session, now, email=email, enroll_in=())
    lead.owner_id, lead.timezone, lead.first_name = owner_id, zone, name
    lead.opted_out_at = now if opted_out else None
    return lead


@pytest.fixture
def day(runtime):
    """Rita's day (New York) with tasks of each kind, and Ivan's (another rep)."""
    now = runtime.now()
    rita = make_user(runtime, "rita@example.com", "rep", timezone="America/New_York")
    ivan = make_user(runtime, "ivan@example.com", "rep", timezone="Europe/Moscow")
    with runtime.session() as session:
        berlin = owned_lead(session, now, rita, "b@example.com", zone="Europe/Berlin", name="Bertha")
        replied = owned_lead(session, now, rita, "r@example.com", name="Rosa")
        quiet = owned_lead(session, now, rita, "q@example.com", name="Quinn")
        gone = owned_lead(session, now, rita, "gone@example.com", name="Gone", opted_out=True)
        theirs = owned_lead(session, now, ivan, "i@example.com", name="Igor")
        session.add(InboundEvent(kind="reply", channel="email", received_at=now, lead_id=replied.id,
                                 summary="Sounds good"))
        ids = {
            "call_old": add_task(session, now, rita, berlin.id, "call", now - timedelta(days=2)),
            "call_replied": add_task(session, now, rita, replied.id, "call", now + timedelta(hours=1)),
            "email": add_task(session, now, rita, quiet.id, "email", now - timedelta(hours=1)),
            "sms": add_task(session, now, rita, quiet.id, "sms", now + timedelta(hours=3)),
            "reply": add_task(session, now, rita, replied.id, "reply", now),
            "todo": add_task(session, now, rita, quiet.id, "task", now - timedelta(minutes=30)),
            # Not on Rita's page: tomorrow in New York, done, an opted-out lead, Ivan's.
            "tomorrow": add_task(session, now, rita, quiet.id, "call", now + timedelta(hours=16)),
            "done": add_task(session, now, rita, quiet.id, "call", now, state="done"),
            "gone": add_task(session, now, rita, gone.id, "call", now),
            "ivans": add_task(session, now, ivan, theirs.id, "call", now, title="Igor's call"),
        }
    return {"rita": rita, "ivan": ivan, "berlin": berlin.id, "replied": replied.id, "theirs": theirs.id,
            "tasks": ids}


def rows_of(page: str) -> list[int]:
    return [int(m) for m in re.findall(r'<tr data-task="(\d+)">', page)]


def test_today_groups_orders_and_counts_a_reps_tasks(runtime, app, day) -> None:
    response = signed_in(app, runtime, day["rita"]).get("/")
    assert response.status_code == 200
    page = response.get_data(as_text=True)
    t = day["tasks"]
    # Calls: the lead who replied first, though due later; then the rest by how overdue.
    assert rows_of(page) == [t["call_replied"], t["call_old"], t["email"], t["sms"], t["reply"], t["todo"]]
    for key, count in (("call", 2), ("email", 1), ("sms", 1), ("other", 2)):
        assert re.search(rf'id="count-{key}">\w+ <strong>{count}</strong>', page), key
    assert "6 open tasks overdue or due today (America/New_York)" in page
    assert "Igor" not in page and "Gone" not in page
    assert f'href="/leads/{day["berlin"]}">Bertha</a>' in page and f'href="/tasks/{t["call_old"]}"' in page
    # Two days overdue: Saturday 09:00 in New York, 15:00 in Berlin.
    assert "Sat 09:00 for you, 15:00 for the lead" in page and "2 d overdue" in page
    assert page.count(">replied</mark>") == 2


def test_ops_see_their_own_day_and_pick_a_reps(runtime, app, day) -> None:
    ops = make_user(runtime, "ops@example.com", "ops")
    client = signed_in(app, runtime, ops)
    page = client.get("/").get_data(as_text=True)
    assert rows_of(page) == [] and 'name="rep"' in page and "rita@example.com (rep)" in page
    page = client.get(f"/?rep={day['ivan']}").get_data(as_text=True)
    assert rows_of(page) == [day["tasks"]["ivans"]] and "Today for ivan@example.com" in page
    bad = client.get("/?rep=nobody")
    assert bad.status_code == 400
    assert 'id="rep-error" class="error">There is no active user &#39;nobody&#39;' in bad.get_data(as_text=True)
    # A rep has no picker and cannot ask for another rep's day.
    rep = signed_in(app, runtime, day["rita"])
    assert 'name="rep"' not in rep.get("/").get_data(as_text=True)
    assert rep.get(f"/?rep={day['ivan']}").status_code == 404


def test_a_rep_gets_404_for_another_reps_lead_or_task(runtime, app, day) -> None:
    rita = signed_in(app, runtime, day["rita"])
    assert rita.get(f"/leads/{day['theirs']}").status_code == 404
    assert rita.get(f"/tasks/{day['tasks']['ivans']}").status_code == 404
    assert rita.get("/leads/999999").status_code == 404  # the same answer as for a lead that does not exist
    assert rita.get(f"/leads/{day['berlin']}").status_code == 200
    ops = signed_in(app, runtime, make_user(runtime, "ops@example.com", "ops"))
    assert ops.get(f"/leads/{day['theirs']}").status_code == 200
    assert "Igor&#39;s call" in ops.get(f"/tasks/{day['tasks']['ivans']}").get_data(as_text=True)


def test_lead_page_shows_the_card_and_the_timeline(runtime, app, day) -> None:
    now = runtime.now()
    with runtime.session() as session:
        lead = session.get(Lead, day["berlin"])
        lead.company, lead.title, lead.custom = "Acme GmbH", "Head of Sales", {"plan": "Enterprise", "seats": 40}
        add_consent(session, lead, "sms", "web form", now - timedelta(days=10), now, "ops@example.com")
    page = signed_in(app, runtime, day["rita"]).get(f"/leads/{day['berlin']}").get_data(as_text=True)
    assert "Head of Sales at Acme GmbH" in page
    assert "Mon 15:00 (Europe/Berlin)" in page  # the lead's time now
    assert "<dt>plan</dt><dd>Enterprise</dd>" in page and "<dt>seats</dt><dd>40</dd>" in page
    assert "<strong>sms</strong>: web form" in page
    # Timeline: the tasks made three days ago and the consent, in Rita's time beside Bertha's.
    assert "Fri 09:00 for you, 15:00 for the lead" in page
    assert page.count(">task <span") == 1 and ">consent <span" in page


def test_bad_input_never_500s(runtime, app, day) -> None:
    client = signed_in(app, runtime, day["rita"])
    assert client.get("/leads/abc").status_code == 404
    assert client.get("/?rep=%00").status_code == 404  # a rep's own day only


def test_times_for_the_viewer_and_the_lead() -> None:
    at = datetime(2026, 3, 3, 9, 5, tzinfo=timezone.utc)  # a Tuesday
    now = at
    assert for_both(at, "UTC", ("Europe/Moscow",), now) == "Tue 09:05 for you, 12:05 for the lead"
    assert for_both(at, "UTC", ("Asia/Tokyo",), now) == "Tue 09:05 for you, 18:05 for the lead"
    assert for_both(at, "America/Los_Angeles", ("Asia/Tokyo",), now) == "Tue 01:05 for you, 18:05 for the lead"
    early = at - timedelta(hours=7)  # Tuesday 11:05 in Tokyo is still Monday in Los Angeles
    assert for_both(early, "Asia/Tokyo", ("America/Los_Angeles",), now) == "Tue 11:05 for you, Mon 18:05 for the lead"
    assert for_both(at, "UTC", ("Europe/London",), now) == "Tue 09:05"  # the same wall clock
    assert for_both(at, "UTC", ("Europe/Paris", "America/New_York"), now) == "Tue 09:05"  # zone not known
    assert wall(at - timedelta(days=10), "UTC", now) == "Sat 21 Feb 09:05"
    assert overdue(at - timedelta(days=3, hours=1), now) == "3 d overdue"
    assert overdue(at - timedelta(minutes=20), now) == "20 min overdue" and overdue(at, now) == "due"


def test_arrange_keeps_every_group_in_order() -> None:
    at = datetime(2026, 3, 3, tzinfo=timezone.utc)
    tasks = [{"id": i, "kind": kind, "replied": replied, "due_at": at + timedelta(hours=h), "priority": 0}
             for i, (kind, replied, h) in enumerate([("call", False, -5), ("alert", False, 0), ("call", True, 2),
                                                     ("voicemail", False, -1), ("call", False, -9)])]
    groups = arrange(tasks)
    assert [g.key for g in groups] == ["call", "email", "sms", "other"]
    assert [t["id"] for t in groups[0].tasks] == [2, 4, 0]
    assert [t["id"] for t in groups[3].tasks] == [3, 1] and groups[1].tasks == []


# ---------------------------------------------------------------- the work view


@pytest.fixture
def workday(cli, tmp_path, runtime, app):
    """The day of tests.support.web.work_day; returns {email: open task id} and the reps' ids."""
    work_day(cli, tmp_path)
    with runtime.session() as session:
        tasks = dict(session.execute(sa.select(Lead.email, Task.id).join(Task, Task.lead_id == Lead.id)
                                     .where(Task.state == "open")).all())
        users = dict(session.execute(sa.select(User.email, User.id)).all())
    return {"tasks": tasks, "rita": users[RITA], "omar": users[OMAR]}


def hx(client, path: str, data: dict, token: str):
    return client.post(path, data=data, headers={"HX-Request": "true", "X-CSRFToken": token})


def test_call_work_view_shows_the_script_objections_and_a_tel_link(runtime, app, workday) -> None:
    client = signed_in(app, runtime, workday["rita"])
    page = client.get(f"/tasks/{workday['tasks']['ann@alpha.example']}").get_data(as_text=True)
    assert "Discovery call with Ann Archer, Alpha (CTO)" in page  # rendered for the lead
    assert "Greeting and introduction" in page and "Hi Ann, this is Rita Rep." in page
    assert 'value="have_supplier"' in page  # an objection branch to tick
    # No voice plugin configured: the number as a tel: link, not a button that would fail.
    assert 'href="tel:+12125550101"' in page and "/dial" not in page
    assert "Ann Archer" in page and "Timeline" in page and "Hello Ann" in page  # the card and the intro email
    assert 'id="shortcuts"' in page and "<kbd>Ctrl</kbd>+<kbd>Enter</kbd>" in page


def test_saving_a_call_logs_it_and_answers_with_the_next_task(runtime, app, workday) -> None:
    client = signed_in(app, runtime, workday["rita"])
    task_id = workday["tasks"]["ann@alpha.example"]
    token = csrf_token(client, f"/tasks/{task_id}")
    response = hx(client, f"/tasks/{task_id}/done", {
        "outcome": "connected", "objection": ["have_supplier"], "new_objection": "Too_Busy", "notes": "nice",
        "fact_key": ["team_size", ""], "fact_value": ["12", ""]}, token)
    assert response.status_code == 200
    # The next task of Rita's day, in place: the follow-up email (calls first, then emails).
    following = workday["tasks"]["ben@beta.example"]
    assert response.headers["HX-Push-Url"] == f"/tasks/{following}"
    body = response.get_data(as_text=True)
    assert body.lstrip().startswith('<div id="work"') and "<html" not in body
    assert "Task %d done: connected." % task_id in body and "Re: Hello Ben" in body
    with runtime.session() as session:
        call = session.scalars(sa.select(Call).where(Call.task_id == task_id)).one()
        assert call.outcome == "connected" and call.script_key == "voice/discovery_call"
        assert sorted(session.scalars(sa.select(CallObjection.key).where(CallObjection.call_id == call.id))) \
            == ["have_supplier", "too_busy"]
        assert session.scalars(sa.select(Lead).where(Lead.email == "ann@alpha.example")).one().custom["team_size"] \
            == "12"
    # The key a rep typed is offered as a box to tick on the next call with this script.
    page = client.get(f"/tasks/{workday['tasks']['otto@omega.example']}").get_data(as_text=True)
    assert 'value="too_busy"' not in page  # Omar's task: Rita may not see it
    ops = signed_in(app, runtime, make_user(runtime, "ops@acme.example", "ops"))
    assert 'value="too_busy"' in ops.get(f"/tasks/{workday['tasks']['otto@omega.example']}").get_data(as_text=True)


def test_a_call_back_is_in_the_viewers_zone_and_a_plain_post_redirects(runtime, app, workday) -> None:
    client = signed_in(app, runtime, workday["rita"])
    task_id = workday["tasks"]["ann@alpha.example"]
    token = csrf_token(client, f"/tasks/{task_id}")
    response = client.post(f"/tasks/{task_id}/done", data={"outcome": "call_back_later", "call_back": "2026-03-03T10:30",
                                                          "csrf_token": token})
    assert response.status_code == 303 and response.headers["Location"].startswith("/tasks/")
    with runtime.session() as session:
        again = follow_up(session, session.get(Task, task_id))
        # 10:30 in New York (Rita's zone) is 15:30 UTC, inside the lead's contact hours.
        assert again.due_at == datetime(2026, 3, 3, 15, 30, tzinfo=timezone.utc)


@pytest.mark.parametrize(("path", "data", "field", "reason"), [
    ("done", {"outcome": ""}, "outcome", "pick how the call ended"),
    ("done", {"outcome": "teleported"}, "outcome", "is not one of the outcomes"),
    ("done", {"outcome": "connected", "new_objection": "too expensive!"}, "new_objection", "is not a key"),
    ("done", {"outcome": "connected", "fact_key": ["team size"], "fact_value": ["3"]}, "facts",
     "is not a field name"),
    ("done", {"outcome": "call_back_later", "call_back": "tomorrow"}, "call_back", "enter a date and time"),
    ("snooze", {"until": "2020-01-01T10:00"}, "until", "a time in the future"),
    ("snooze", {"until": ""}, "until", "enter a date and time"),
    ("skip", {"reason": "  "}, "reason", "say why"),
])
def test_bad_input_comes_back_with_the_reason_by_the_field(runtime, app, workday, path, data, field, reason) -> None:
    client = signed_in(app, runtime, workday["rita"])
    task_id = workday["tasks"]["ann@alpha.example"]
    token = csrf_token(client, f"/tasks/{task_id}")
    for headers in ({"HX-Request": "true"}, {}):
        response = client.post(f"/tasks/{task_id}/{path}", data={**data, "csrf_token": token}, headers=headers)
        assert response.status_code == 422
        page = response.get_data(as_text=True)
        found = re.search(rf'<small id="{field}-error" class="error" role="alert">([^<]*)</small>', page)
        assert found and reason in found.group(1), page[:2000]
        assert f'aria-describedby="{field}-error"' in page
    with runtime.session() as session:
        assert session.get(Task, task_id).state == "open"


def test_manual_email_is_sent_in_the_thread_with_the_footer(runtime, app, workday, smtp_sink) -> None:
    client = signed_in(app, runtime, workday["rita"])
    task_id = workday["tasks"]["ben@beta.example"]
    page = client.get(f"/tasks/{task_id}").get_data(as_text=True)
    assert 'value="Re: Hello Ben"' in page and "did my note reach you?" in page
    [intro] = messages_to(smtp_sink, "ben@beta.example")
    token = csrf_token(client, f"/tasks/{task_id}")
    response = hx(client, f"/tasks/{task_id}/send", {"subject": "Re: Hello Ben", "body": "Ben, one more idea."},
                  token)
    assert response.status_code == 200, response.get_data(as_text=True)[:3000]
    [_intro, sent] = messages_to(smtp_sink, "ben@beta.example")
    assert sent["In-Reply-To"] == intro["Message-ID"] and intro["Message-ID"] in sent["References"]
    text = sent.get_body(("plain",)).get_content()
    assert "Ben, one more idea." in text and "Unsubscribe" in text and runtime.settings.sending.postal_address in text
    with runtime.session() as session:
        touch = session.scalars(sa.select(Touch).join(Task, Task.touch_id == Touch.id).where(Task.id == task_id)).one()
        assert (touch.status, touch.message_id) == ("sent", sent["Message-ID"])
        assert session.get(Task, task_id).state == "done"


def test_manual_email_needs_a_subject_and_a_body(runtime, app, workday, smtp_sink) -> None:
    client = signed_in(app, runtime, workday["rita"])
    task_id = workday["tasks"]["ben@beta.example"]
    token = csrf_token(client, f"/tasks/{task_id}")
    before = len(messages_to(smtp_sink, "ben@beta.example"))
    for data, field in (({"subject": "Hi", "body": " "}, "body"), ({"subject": "", "body": "Hello"}, "subject")):
        response = hx(client, f"/tasks/{task_id}/send", data, token)
        assert response.status_code == 422 and f'id="{field}-error"' in response.get_data(as_text=True)
    assert len(messages_to(smtp_sink, "ben@beta.example")) == before


def test_skip_and_snooze_take_the_task_off_today(runtime, app, workday) -> None:
    client = signed_in(app, runtime, workday["rita"])
    token = csrf_token(client)
    assert 'id="count-other">Other <strong>1</strong>' in client.get("/").get_data(as_text=True)
    response = hx(client, f"/tasks/{workday['tasks']['cal@gamma.example']}/skip", {"reason": "no website"}, token)
    assert response.status_code == 200 and "skipped" in response.get_data(as_text=True)
    response = hx(client, f"/tasks/{workday['tasks']['ann@alpha.example']}/snooze", {"until": "2026-03-05T09:00"},
                  token)
    assert response.status_code == 200
    today = client.get("/").get_data(as_text=True)
    assert 'id="count-other">Other <strong>0</strong>' in today and 'id="count-call">Calls <strong>0</strong>' in today
    with runtime.session() as session:
        assert session.get(Task, workday["tasks"]["cal@gamma.example"]).notes == "no website"


def test_a_rep_cannot_work_another_reps_task(runtime, app, workday) -> None:
    client = signed_in(app, runtime, workday["rita"])
    token = csrf_token(client)
    otto = workday["tasks"]["otto@omega.example"]
    assert client.get(f"/tasks/{otto}").status_code == 404
    for action, data in (("done", {"outcome": "connected"}), ("skip", {"reason": "x"}), ("send", {"body": "x"}),
                         ("snooze", {"until": "2026-03-05T09:00"}), ("dial", {})):
        assert hx(client, f"/tasks/{otto}/{action}", data, token).status_code == 404, action
    with runtime.session() as session:
        assert session.get(Task, otto).state == "open"
