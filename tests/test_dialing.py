"""A voicemail drop as the core keeps it (sequencer.dialing): `placed` when the provider took the call,
`sent` only when its message was played, whatever order the reports come in."""
from __future__ import annotations

from datetime import timedelta

import pytest
import sqlalchemy as sa

from sequencer.channels import Core
from sequencer.dialing import CALL_OVER, NOT_PLAYED
from sequencer.models import Enrollment, Touch
from sequencer.receiving import CALL_RANK
from sequencer.testing.world import make_lead

SID = "CA0123456789abcdef0123456789abcdef"
ENDED = "the call ended before the message was over"


@pytest.fixture
def core(runtime) -> Core:
    """The Core the voice plugin reports through."""
    return runtime.plugins.core("voice")


@pytest.fixture
def drop(runtime) -> int:
    """A voicemail drop as the engine recorded it when the provider took its call: placed, not sent."""
    now = runtime.now()
    with runtime.session() as session:
        lead = make_lead(session, now, enroll_in=("drops",))
        enrollment_id = session.scalar(sa.select(Enrollment.id).where(Enrollment.lead_id == lead.id))
        touch = Touch(enrollment_id=enrollment_id, step_key="drop", lead_id=lead.id, channel="voice", action="auto",
                      status="placed", provider_id=SID, provider_status="queued", body_text="Hi Jane, it is Acme.",
                      created_at=now, updated_at=now)
        session.add(touch)
        session.flush()
        return touch.id


def state(runtime, touch_id: int) -> tuple:
    with runtime.session() as session:
        touch = session.get(Touch, touch_id)
        return touch.status, touch.sent_at, touch.outcome, touch.error


def test_call_over_lists_the_contracts_final_call_statuses() -> None:
    assert set(CALL_OVER) == {word for word, rank in CALL_RANK.items() if rank == max(CALL_RANK.values())}


def test_no_call_status_makes_a_placed_drop_sent(runtime, core, drop, sent_touches) -> None:
    for status in ("initiated", "ringing", "in_progress", "completed"):
        assert core.call_result(SID, status, duration=31, answered_by="machine_end_beep").action == "updated"
        assert state(runtime, drop) == ("placed", None, None, None)
    assert sent_touches == []


def test_played_makes_the_drop_sent_then_the_end_of_its_call_completes_it(runtime, clock, core, drop,
                                                                          sent_touches) -> None:
    clock.advance(timedelta(seconds=40))
    played_at = runtime.now()
    receipt = core.voicemail_played(drop)
    assert (receipt.action, receipt.changed, receipt.touch_id) == ("updated", True, drop)
    assert state(runtime, drop) == ("sent", played_at, "left_voicemail", None)
    assert [(e.touch_id, e.channel, e.provider_id, e.sent_at)
            for e in sent_touches] == [(drop, "voice", SID, played_at)]

    clock.advance(timedelta(seconds=5))
    core.call_result(SID, "completed", duration=45, answered_by="machine_end_beep")
    assert core.voicemail_missed(SID, ENDED).action == "unchanged"
    # Replays change nothing.
    assert core.voicemail_played(drop).action == "unchanged"
    assert core.call_result(SID, "completed", duration=45).action == "unchanged"
    assert state(runtime, drop) == ("completed", played_at, "left_voicemail", None)
    assert len(sent_touches) == 1


@pytest.mark.parametrize("missed_first", [True, False], ids=["failed_first", "ended_first"])
def test_a_played_report_after_the_end_of_the_call_completes_the_drop(runtime, clock, core, drop, sent_touches,
                                                                      missed_first) -> None:
    core.call_result(SID, "completed", duration=45, answered_by="machine_end_beep")
    if missed_first:
        # The plugin read the end of the call as "not played", since that report was not there yet.
        assert core.voicemail_missed(SID, ENDED).action == "failed"
        assert state(runtime, drop) == ("failed", None, None, f"{NOT_PLAYED}: {ENDED}")
    assert sent_touches == []
    clock.advance(timedelta(seconds=2))
    assert core.voicemail_played(drop).action == "updated"
    # The same end as in the usual order: the message was heard, and the call is over.
    assert state(runtime, drop) == ("completed", runtime.now(), "left_voicemail", None)
    assert [e.sent_at for e in sent_touches] == [runtime.now()]
    assert core.voicemail_missed(SID, ENDED).action == "unchanged"
    assert state(runtime, drop)[0] == "completed" and len(sent_touches) == 1


def test_missed_fails_a_placed_drop_once_and_it_is_never_sent(runtime, core, drop, sent_touches) -> None:
    core.call_result(SID, "no_answer")
    receipt = core.voicemail_missed(SID, "nobody answered")
    assert (receipt.action, receipt.changed) == ("failed", True)
    assert core.voicemail_missed(SID, "nobody answered").action == "unchanged"
    assert state(runtime, drop) == ("failed", None, None, f"{NOT_PLAYED}: nobody answered")
    assert sent_touches == []
