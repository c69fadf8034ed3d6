"""A rep's message sent from its task (sequencer.manual) is recorded as the engine records a send."""
from __future__ import annotations

import pytest
import sqlalchemy as sa

from sequencer import hookimpl, manual
from sequencer.channels import OutboundTouch, SendResult
from sequencer.engine import Engine
from sequencer.models import Task, User
from sequencer.testing.world import ALWAYS_OPEN, REP, apply, enroll_csv, enrollment_of, team, touches
from tests.support.channels import FakeSms

MANUAL_TEXT = 'name = "by-hand"\n' + ALWAYS_OPEN + """
[[steps]]
key = "text"
channel = "sms"
action = "manual"
body = "Hi {{ lead.first_name }}, a quick question. Reply STOP to opt out."

[[steps]]
key = "email"
channel = "email"
wait = "1d"
subject = "Hello"
body = "Hi {{ lead.first_name }}."
"""


class PlacingSms(FakeSms):
    """Takes every text but knows only later whether it reached the lead (SendResult.sent_when_reported)."""

    def send_batch(self, touches: list[OutboundTouch]) -> list[SendResult]:
        return [SendResult(t.touch_id, accepted=True, provider_id=f"SM{t.touch_id}", provider_status="queued",
                           sent_when_reported=True) for t in touches]


class Placing:
    @hookimpl
    def register_channels(self, register) -> None:  # noqa: ANN001
        register(PlacingSms())


@pytest.fixture
def placing(runtime):
    runtime.plugins.add_plugin(Placing(), "placing")
    yield
    runtime.plugins.remove_plugin("placing")


def test_a_message_sent_only_when_reported_is_placed_and_its_task_done(cli, runtime, clock, tmp_path,
                                                                       placing) -> None:
    team(cli)
    apply(cli, tmp_path, MANUAL_TEXT)
    enroll_csv(cli, tmp_path, [f"pat@corp.example,+12125550100,Pat,{REP}"], "by-hand", clock.now(),
               header="email,phone,first_name,owner")
    cli("consent", "add", "pat@corp.example", "--channel", "sms", "--source", "web form")
    assert Engine(runtime).run_until_idle().tasks == 1
    with runtime.session() as session:
        task_id = session.scalar(sa.select(Task.id))
        rep_id = session.scalar(sa.select(User.id).where(User.email == REP))

    result = manual.send(runtime, task_id, subject=None, body="Hi Pat, one question. Reply STOP to opt out.",
                         user_id=rep_id)
    assert result.accepted and result.sent_when_reported
    [text] = touches(runtime)
    assert (text.status, text.sent_at, text.provider_id) == ("placed", None, f"SM{text.id}")
    # The rep did their part: the task is done and the cadence goes on, as after a sent message.
    with runtime.session() as session:
        assert session.get(Task, task_id).state == "done"
    enrollment = enrollment_of(runtime, "pat@corp.example")
    assert (enrollment.state, enrollment.step_position) == ("active", 1)


def test_a_call_task_is_not_sent_as_a_message(cli, runtime, clock, tmp_path) -> None:
    """A call step's task is the rep's call: sending it would place a voicemail drop instead."""
    team(cli)
    apply(cli, tmp_path, 'name = "calls"\n' + ALWAYS_OPEN + """
[[steps]]
key = "call"
channel = "voice"
action = "manual"
body = "Ask about their current supplier."
""")
    enroll_csv(cli, tmp_path, [f"pat@corp.example,+12125550100,Pat,{REP}"], "calls", clock.now(),
               header="email,phone,first_name,owner")
    assert Engine(runtime).run_until_idle().tasks == 1
    with runtime.session() as session:
        task = session.scalars(sa.select(Task)).one()
        rep_id = session.scalar(sa.select(User.id).where(User.email == REP))
    assert task.kind == "call"
    with pytest.raises(manual.ManualError, match=f"task {task.id} is a call: call the lead"):
        manual.send(runtime, task.id, subject=None, body="Hi Pat", user_id=rep_id)
    [call] = touches(runtime)
    assert call.status == "pending" and call.provider_id is None
