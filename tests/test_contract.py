"""The plugin contract after the send, on a throwaway SMS channel: statuses, inbound messages, jobs."""
from __future__ import annotations

import logging
import threading
from datetime import timedelta

import pytest
import sqlalchemy as sa
from apscheduler.schedulers.background import BackgroundScheduler

from sequencer import hookimpl, suppressions
from sequencer.channels import Core
from sequencer.models import Enrollment, InboundEvent, Lead, Suppression, Task, Touch
from sequencer.timeline import lead_timeline
from sequencer.worker import add_jobs
from tests.support.channels import FakeSms
from sequencer.testing.world import make_lead

PHONE = "+14155552671"


class BeeperPlugin:
    def __init__(self) -> None:
        self.runs: list[Core] = []
        self.ran = threading.Event()

    @hookimpl
    def register_channels(self, register) -> None:  # noqa: ANN001
        register(FakeSms())

    @hookimpl
    def register_jobs(self, register) -> None:  # noqa: ANN001
        register("fetch_opt_outs", self.fetch_opt_outs, 3600)

    def fetch_opt_outs(self, core: Core) -> None:
        # What a real job does with its Core: read the provider's list, report each number.
        core.opt_out("sms", "+14155552676", source="provider_list", detail="on the provider's opt-out list")
        self.runs.append(core)
        self.ran.set()


@pytest.fixture
def beeper(runtime):
    plugin = BeeperPlugin()
    runtime.plugins.add_plugin(plugin, "beeper")
    yield plugin
    runtime.plugins.remove_plugin("beeper")


@pytest.fixture
def core(runtime, beeper) -> Core:
    return runtime.plugins.channel("sms").context.core


def sent_touch(runtime, lead_id: int, provider_id: str, *, channel: str = "sms") -> int:
    """A touch the provider accepted as `provider_id` (the engine's part, written directly)."""
    now = runtime.now()
    with runtime.session() as session:
        enrollment_id = session.scalar(sa.select(Enrollment.id).where(Enrollment.lead_id == lead_id).limit(1))
        touch = Touch(enrollment_id=enrollment_id, step_key=f"step-{provider_id}", lead_id=lead_id, channel=channel,
                      status="sent", provider_status="queued", provider_id=provider_id, body_text="Hi",
                      sent_at=now, created_at=now, updated_at=now)
        session.add(touch)
        session.flush()
        return touch.id


def touch_row(runtime, touch_id: int) -> Touch:
    with runtime.session() as session:
        return session.get(Touch, touch_id)


def new_lead(runtime, phone: str = PHONE, email: str = "jane.doe@example.com", cadences=("Outbound Q2",)) -> int:
    with runtime.session() as session:
        return make_lead(session, runtime.now(), email=email, phone=phone, enroll_in=cadences).id


def receive(core: Core, runtime, text: str, *, sender: str = PHONE, provider_id: str | None = None):
    return core.inbound_message(channel="sms", from_address=sender, to_address="+12025550143", text=text,
                                provider_id=provider_id, at=runtime.now(), raw={"Body": text})


# -- delivery statuses ----------------------------------------------------------------------------


def test_statuses_move_forward_only_whatever_order_or_repetition(runtime, core) -> None:
    lead_id = new_lead(runtime)
    touch_id = sent_touch(runtime, lead_id, "SM1")
    at = runtime.now()
    steps = [("sending", "updated"), ("delivered", "updated"), ("sent", "unchanged"), ("delivered", "unchanged"),
             ("failed", "unchanged"), ("queued", "unchanged")]
    assert [core.delivery_status("sms", "SM1", status, at).action for status, _ in steps] == [a for _, a in steps]
    touch = touch_row(runtime, touch_id)
    assert (touch.status, touch.provider_status, touch.error) == ("delivered", "delivered", None)

    failed_id = sent_touch(runtime, lead_id, "SM2")
    receipt = core.delivery_status("sms", "SM2", "undelivered", at, error_code="30003", raw={"ErrorCode": "30003"})
    assert (receipt.action, receipt.changed, receipt.touch_id, receipt.lead_id) == ("updated", True, failed_id,
                                                                                     lead_id)
    assert core.delivery_status("sms", "SM2", "delivered", at).action == "unchanged"
    touch = touch_row(runtime, failed_id)
    assert (touch.status, touch.provider_status, touch.error) == ("failed", "undelivered",
                                                                  "undelivered (provider error 30003)")
    with runtime.session() as session:
        events = session.execute(sa.select(InboundEvent.touch_id, InboundEvent.kind, InboundEvent.raw)
                                 .order_by(InboundEvent.id)).all()
    # Final statuses only, once each, with the provider's payload.
    assert events == [(touch_id, "status", None), (failed_id, "status", '{"ErrorCode": "30003"}')]


def test_a_status_for_another_channel_or_unknown_id_is_logged_and_ignored(runtime, core, caplog) -> None:
    touch_id = sent_touch(runtime, new_lead(runtime), "SM1")
    with caplog.at_level(logging.WARNING, logger="sequencer.receiving"):
        assert core.delivery_status("sms", "SM404", "delivered", runtime.now()).action == "unknown_id"
        assert core.delivery_status("voice", "SM1", "delivered", runtime.now()).action == "unknown_id"
    assert "sms SM404: no touch has this provider id" in caplog.text
    assert touch_row(runtime, touch_id).status == "sent"


def test_a_status_outside_the_contract_names_the_allowed_words(runtime, core) -> None:
    with pytest.raises(ValueError, match="delivery status 'accepted' is not one of queued, sending, sent"):
        core.delivery_status("sms", "SM1", "accepted", runtime.now())


def test_call_results_move_forward_and_keep_the_recording(runtime, core) -> None:
    touch_id = sent_touch(runtime, new_lead(runtime), "CA1", channel="voice")
    at = runtime.now()
    assert core.call_result("CA1", "ringing", at=at).action == "updated"
    assert core.call_result("CA1", "completed", duration=42, answered_by="human",
                            recording_url="https://rec.example/CA1", at=at).action == "updated"
    assert core.call_result("CA1", "in_progress", at=at).action == "unchanged"
    touch = touch_row(runtime, touch_id)
    assert (touch.status, touch.provider_status) == ("completed", "completed")
    with runtime.session() as session:
        event = session.scalar(sa.select(InboundEvent).where(InboundEvent.kind == "call_result"))
    assert event.summary == "call completed, 42 s, answered by human, recording https://rec.example/CA1"
    assert (event.channel, event.classification["duration"]) == ("voice", 42)


# -- inbound messages -------------------------------------------------------------------------------


def test_a_reply_ends_the_cadence_opens_a_task_and_is_on_the_timeline(runtime, core) -> None:
    lead_id = new_lead(runtime)
    touch_id = sent_touch(runtime, lead_id, "SM1")
    # Written nationally: read in [leads] default_region (US).
    receipt = receive(core, runtime, "Sure, call me Tuesday", sender="(415) 555-2671", provider_id="SMin1")
    assert (receipt.action, receipt.changed, receipt.lead_id, receipt.touch_id) == ("reply", True, lead_id, touch_id)
    # The provider retries the webhook: nothing happens twice.
    again = receive(core, runtime, "Sure, call me Tuesday", provider_id="SMin1")
    assert (again.action, again.changed) == ("reply", False)
    with runtime.session() as session:
        assert session.scalar(sa.select(Enrollment.state)) == "replied"
        [task] = session.scalars(sa.select(Task)).all()
        assert (task.kind, task.lead_id, task.touch_id, task.instructions) == ("reply", lead_id, touch_id,
                                                                               "Sure, call me Tuesday")
        rows = [(r["kind"], r["channel"], r["detail"]) for r in lead_timeline(session, session.get(Lead, lead_id))
                if r["kind"] == "reply"]
        sentiment = session.scalar(sa.select(InboundEvent.classification))["sentiment"]
    assert rows == [("reply", "sms", "Sure, call me Tuesday")]
    assert sentiment == "positive"


def test_a_reply_from_an_unknown_number_is_recorded_unmatched(runtime, core) -> None:
    receipt = receive(core, runtime, "who is this?", sender="+14155550100")
    assert (receipt.action, receipt.lead_id) == ("unmatched", None)
    with runtime.session() as session:
        assert session.scalar(sa.select(InboundEvent.summary)) == "who is this?"


@pytest.mark.parametrize("text", ["STOP", " stop ", "Stop!", "СТОП", "отписаться", "please stop texting me",
                                  "больше не пишите"])
def test_opt_out_words_and_sentences_opt_the_lead_out_everywhere(runtime, core, text) -> None:
    lead_id = new_lead(runtime)
    receipt = receive(core, runtime, text, provider_id="SMin1")
    assert (receipt.action, receipt.changed, receipt.lead_id) == ("opted_out", True, lead_id)
    assert receive(core, runtime, text).changed is False  # a replay changes nothing
    with runtime.session() as session:
        lead = session.get(Lead, lead_id)
        assert lead.opted_out_at is not None
        assert session.scalar(sa.select(Enrollment.state)) == "opted_out"
        for channel in ("sms", "voice", "email"):
            assert suppressions.is_blocked(session, lead, channel)
        # One event, the opt-out, carrying the message.
        [event] = session.scalars(sa.select(InboundEvent)).all()
    assert (event.kind, event.channel, event.message_id, event.classification["text"]) == ("opt_out", "sms",
                                                                                            "SMin1", text)


def test_an_opt_out_from_a_number_no_lead_has_still_suppresses_it(runtime, core) -> None:
    receipt = receive(core, runtime, "STOP", sender="+14155550100")
    assert (receipt.action, receipt.changed, receipt.lead_id) == ("opted_out", True, None)
    with runtime.session() as session:
        assert suppressions.find(session, "phone", "+14155550100") is not None


def test_yes_from_a_number_that_never_opted_out_is_a_reply(runtime, core) -> None:
    lead_id = new_lead(runtime)
    assert receive(core, runtime, "YES").action == "reply"
    with runtime.session() as session:
        lead = session.get(Lead, lead_id)
        assert lead.opted_out_at is None
        assert session.scalar(sa.select(Enrollment.state)) == "replied"


def test_start_after_stop_lets_texts_through_and_nothing_else(runtime, core) -> None:
    lead_id = new_lead(runtime)
    receive(core, runtime, "STOP")
    receipt = receive(core, runtime, " start ", provider_id="SMin2")
    assert (receipt.action, receipt.lead_id) == ("opted_in", lead_id)
    with runtime.session() as session:
        lead = session.get(Lead, lead_id)
        assert lead.opted_out_at is None
        assert suppressions.is_blocked(session, lead, "sms") is None
        assert "phone +14155552671 is suppressed on voice" in suppressions.is_blocked(session, lead, "voice")
        assert "email jane.doe@example.com is suppressed on email" in suppressions.is_blocked(session, lead, "email")
        # No automatic re-enrollment.
        assert session.scalar(sa.select(Enrollment.state)) == "opted_out"
    # Now opted in, another YES is only a reply.
    assert receive(core, runtime, "YES").action == "reply"


def test_start_never_lifts_a_suppression_a_person_added(runtime, core) -> None:
    lead_id = new_lead(runtime)
    with runtime.session() as session:
        suppressions.add(session, "phone", PHONE, reason="asked by phone never to be contacted", source="manual",
                         now=runtime.now())
    assert receive(core, runtime, "START").action == "reply"
    with runtime.session() as session:
        assert suppressions.is_blocked(session, session.get(Lead, lead_id), "sms")


def test_help_words_ask_for_the_help_text(runtime, core) -> None:
    lead_id = new_lead(runtime)
    receipt = receive(core, runtime, "help", provider_id="SMin1")
    assert (receipt.action, receipt.lead_id) == ("help", lead_id)
    assert receive(core, runtime, "Info").action == "help"
    with runtime.session() as session:
        # Asking for help is not a reply: the cadence goes on.
        assert session.scalar(sa.select(Enrollment.state)) == "active"


def test_keywords_come_from_the_config(runtime, core) -> None:
    runtime.settings.inbound.opt_out_keywords = ["HALT"]
    new_lead(runtime)
    assert receive(core, runtime, "halt").action == "opted_out"


# -- opt-outs and verdicts from the provider -------------------------------------------------------


def test_address_verdicts(runtime, core) -> None:
    lead_id = new_lead(runtime)
    landline = core.address_verdict("sms", PHONE, "unable_sms", detail="error 30006 landline")
    assert (landline.action, landline.changed, landline.lead_id) == ("flagged", True, lead_id)
    with runtime.session() as session:
        lead = session.get(Lead, lead_id)
        assert suppressions.is_blocked(session, lead, "sms") and not suppressions.is_blocked(session, lead, "voice")
        assert not lead.phone_wrong and session.scalar(sa.select(Enrollment.state)) == "active"
    invalid = core.address_verdict("sms", PHONE, "invalid", detail="error 21211")
    assert invalid.changed
    with runtime.session() as session:
        lead = session.get(Lead, lead_id)
        assert lead.phone_wrong and suppressions.is_blocked(session, lead, "voice")
        assert session.scalar(sa.select(Enrollment.state)) == "bounced"
    assert core.address_verdict("sms", PHONE, "invalid").changed is False


# -- what commands, webhooks and jobs get ------------------------------------------------------------


def test_core_gives_the_plugin_its_settings_clock_and_database(runtime, core) -> None:
    runtime.settings.plugins["beeper"] = {"from_number": "+12025550143"}
    assert core.settings == {"from_number": "+12025550143"}
    assert core.now() == runtime.now()
    with core.session() as session:
        session.add(Lead(email="x@example.com", email_normalized="x@example.com", created_at=core.now(),
                         updated_at=core.now()))
    with runtime.session() as session:
        assert session.scalar(sa.select(sa.func.count()).select_from(Lead)) == 1


def test_a_job_added_by_register_jobs_runs_in_the_worker_scheduler(runtime, beeper) -> None:
    new_lead(runtime, phone="+14155552676")
    scheduler = BackgroundScheduler(timezone="UTC")
    add_jobs(scheduler, runtime, [])
    job = scheduler.get_job("plugin:beeper:fetch_opt_outs")
    assert (job.trigger.interval, job.max_instances, job.coalesce) == (timedelta(hours=1), 1, True)
    scheduler.start()
    try:
        assert beeper.ran.wait(10), "the plugin job did not run"
    finally:
        scheduler.shutdown(wait=True)
    assert beeper.runs == [runtime.plugins.core("beeper")]
    with runtime.session() as session:
        assert session.scalar(sa.select(Lead.opted_out_at)) is not None
        assert session.scalar(sa.select(Suppression.source)) == "provider_list"


def test_keywords_that_are_not_a_list_stop_start_up_naming_the_key(config_path) -> None:
    from sequencer.config import ConfigError, load_settings

    config_path.write_text(config_path.read_text() + '\n[inbound]\nopt_out_keywords = "STOP"\n', encoding="utf-8")
    with pytest.raises(ConfigError, match=r"config.toml: \[inbound\] opt_out_keywords must be a list of words"):
        load_settings(config_path)
