"""The engine: claim due enrollments, run their step, log the touch, advance.

A batch goes through short transactions:
1. claim: lease a batch of due enrollments (FOR UPDATE SKIP LOCKED on PostgreSQL);
2. plan: load the batch, decide each enrollment with one pure function (sequencer.decide:
   exits, suppressions, address, window, contact hours, consent, channel, throttles, then the
   step), then write the decisions: render and let the channel prepare each touch to send
   (it assigns what must be committed before the send, such as an email's Message-ID), open
   tasks, defer, pause or end the rest; each touch to send is written `pending`, its
   enrollment still leased;
then, in groups of `[engine] max_in_flight` touches, one group after the other:
3. arm: check the group's enrollments again (ended? mailbox held meanwhile?) and commit its
   touches as `sending`, so a crash after this point can never lead to a second send of the
   same step; renew the lease of the batch once a quarter of it is gone;
4. send and settle: hand each channel the group's touches, then record the results and
   advance the enrollments.

At most `max_in_flight` touches per worker are ever `sending` without a recorded answer, so a
kill -9 leaves at most that many `unknown` for a person to resolve. The rest of the batch is
`pending` and leased: after a crash it is claimed again once the lease expires and sent with
the same Message-ID. The number of SQL statements of claim and plan does not depend on the
batch size, nor that of a group on the group size.

A refusal that blames our side (`SendResult.sender_problem`: authentication, blocklist, rate
limiting) holds the touch's mailbox and alerts every admin; the touch goes back to `pending`
without using an attempt and the enrollment waits as `mailbox_held` until
`sequencer mailboxes release` resumes it.

A provider's "slow down" (`SendResult.defer_until`: HTTP 429, a number's rate) says nothing
about the lead either: the touch goes back to `pending` and the enrollment is due again at that
instant, moved into its window (and contact hours). The attempt's row is removed, as for a held
mailbox, so the attempt is not counted: the next one takes the same number.

A touch the provider took that counts only once its plugin reports it done
(`SendResult.sent_when_reported`: a voicemail drop is sent when its message was played) is
recorded `placed`: its enrollment moves on and throttles count it, as for a sent one, and it
becomes `sent` (touch_sent fires then) on the plugin's report. The provider has it, so nobody
reviews it after a crash.

Everything that differs between channels comes from the step's channel declaration
(`Channel.address_kind`, `sender_kind`, `task_kind`...): this module names no channel.
"""
from __future__ import annotations

import logging
import os
import socket
import threading
import time
import uuid
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa
import sqlalchemy.orm as so

from sequencer import cadences, suppressions
from sequencer.calendar import LocalCalendar, NoOpening, Wait
from sequencer.calls import call_task_script
from sequencer.channels import OutboundTouch, Sender, SendResult, SentTouch
from sequencer.clock import iso_z
from sequencer.db import is_sqlite
from sequencer.decide import (
    ADDRESS_FIELDS,
    COUNTED,
    Counts,
    Defer,
    Exit,
    Facts,
    Limits,
    OpenTask,
    Pause,
    Repair,
    Rules,
    Skip,
    decide_all,
    facts_for,
    lead_address,
    opening,
)
from sequencer.exits import end_enrollments, end_for_lead
from sequencer.messages import add_text_footer, choose_variant, render_step, template_context
from sequencer.models import (
    Cadence,
    Enrollment,
    EnrollmentState,
    Lead,
    Mailbox,
    Step,
    Task,
    Touch,
    TouchAttempt,
    TouchStatus,
    User,
)
from sequencer.rendering import TemplateProblem
from sequencer.users import hold_for_sender_problem

if TYPE_CHECKING:
    from sequencer.plugins import Plugins
    from sequencer.runtime import Runtime

log = logging.getLogger(__name__)



@dataclass
class BatchReport:
    claimed: int = 0
    sent: int = 0
    # Accepted, and sent only once their plugin reports them done (SendResult.sent_when_reported).
    placed: int = 0
    tasks: int = 0
    deferred: int = 0
    paused: int = 0
    retried: int = 0
    failed: int = 0
    exited: int = 0

    def add(self, other: BatchReport) -> None:
        for name in self.__dataclass_fields__:
            setattr(self, name, getattr(self, name) + getattr(other, name))


@dataclass
class _Planned:
    """A rendered touch of the batch: `pending` until its group's turn, then `sending` until settled."""

    enrollment_id: int
    touch_id: int
    attempt: int
    outbound: OutboundTouch
    # Sent from the enrollment's mailbox (the channel's sender_kind): a hold of the mailbox stops it.
    from_mailbox: bool


@dataclass
class _Batch:
    """What plan() loaded for a batch: its rows, and each enrollment's facts for the decision."""

    enrollments: list[Enrollment]
    steps: dict[int, Step | None]
    owners: dict[int, User]
    existing: dict[tuple[int, str], Touch]
    attempts: dict[int, int]
    facts: dict[int, Facts]
    counts: Counts
    limits: Limits


@dataclass
class _Writes:
    """New rows and exits of a batch's plan, written set-wise at the end so statements do not grow with it."""

    touches: list[Touch] = field(default_factory=list)
    tasks: list[tuple[Touch, dict[str, Any]]] = field(default_factory=list)
    exits: list[tuple[Enrollment, str, str]] = field(default_factory=list)

    def new_touch(self, e: Enrollment, step: Step, now: datetime) -> Touch:
        touch = Touch(enrollment_id=e.id, step_key=step.key, lead_id=e.lead_id, mailbox_id=e.mailbox_id,
                      channel=step.channel, action=step.action, status="pending", due_at=e.next_due_at,
                      created_at=now, updated_at=now)
        self.touches.append(touch)
        return touch

    def exit(self, e: Enrollment, state: str, reason: str) -> None:
        self.exits.append((e, state, reason))

    def save(self, session: so.Session, now: datetime, plugins: Plugins) -> None:
        if self.touches:
            columns = [c.key for c in Touch.__table__.columns if c.key != "id"]
            rows = [{c: getattr(t, c) for c in columns} for t in self.touches]
            # A batch holds one step per enrollment, so the enrollment id names its new touch.
            ids = dict(session.execute(sa.insert(Touch).returning(Touch.enrollment_id, Touch.id), rows).all())
            for touch in self.touches:
                touch.id = ids[touch.enrollment_id]
        if self.tasks:
            session.execute(sa.insert(Task), [{**row, "touch_id": touch.id} for touch, row in self.tasks])
        by_reason: dict[tuple[str, str], list[int]] = defaultdict(list)
        for e, state, reason in self.exits:
            by_reason[(state, reason)].append(e.id)
        for (state, reason), ids in by_reason.items():
            end_enrollments(session, ids, state=state, reason=reason, now=now, plugins=plugins)


class Engine:
    def __init__(self, runtime: Runtime, *, worker_id: str | None = None, batch_size: int | None = None,
                 max_in_flight: int | None = None) -> None:
        self.rt = runtime
        self.config = runtime.settings.engine
        self.batch_size = batch_size or self.config.batch_size
        self.max_in_flight = max_in_flight or self.config.max_in_flight
        if self.max_in_flight < 1:
            raise ValueError(f"[engine] max_in_flight is {self.max_in_flight}; set it to 1 or more in "
                             f"{runtime.settings.path}")
        self.contact_hours = runtime.settings.contact_hours.hours()
        self.worker_id = worker_id or f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"
        # Set by SIGTERM/SIGINT: finish the batch in hand, claim no more.
        self.stopping = threading.Event()
        # When the batch in hand was last leased (time.monotonic()): arm() renews the lease when it ages.
        self._leased_at = 0.0

    # -- the loop ---------------------------------------------------------------------------

    def run_until_idle(self, max_batches: int | None = None) -> BatchReport:
        """Do every piece of work due now, batch after batch, then return the totals."""
        total = BatchReport()
        self.housekeeping()
        batches = 0
        while (max_batches is None or batches < max_batches) and not self.stopping.is_set():
            report = self.run_batch()
            total.add(report)
            batches += 1
            if report.claimed == 0:
                break
        return total

    def housekeeping(self) -> None:
        """Recover expired leases and resume enrollments whose channel is back."""
        with self.rt.session() as session:
            self.recover_expired_leases(session)
            self.resume_available_channels(session)
            self.resume_after_out_of_office(session)

    def run_batch(self) -> BatchReport:
        """Claim and plan a batch, then send and settle its touches max_in_flight at a time."""
        report = BatchReport()
        with self.rt.session() as session:
            ids = self.claim(session)
        report.claimed = len(ids)
        if not ids:
            return report
        # Taken before plan() writes the batch's leases: their age is never underestimated.
        self._leased_at = time.monotonic()
        with self.rt.session() as session:
            planned = self.plan(session, ids, report)
        for start in range(0, len(planned), self.max_in_flight):
            if start and self.stopping.is_set():
                # Stopping: what has not gone out goes back to the pool now, not when its lease expires.
                self._release([item.enrollment_id for item in planned[start:]])
                break
            self._run_group(planned[start:start + self.max_in_flight], planned[start + self.max_in_flight:], report)
        return report

    def _run_group(self, group: list[_Planned], rest: list[_Planned], report: BatchReport) -> None:
        with self.rt.session() as session:
            ready = self.arm(session, group, rest, report)
        _test_pause("after_plan")
        results = self.send(ready)
        _test_pause("after_send")
        self._settle_until_recorded(ready, results, report)

    def _release(self, ids: list[int]) -> None:
        with self.rt.session() as session:
            session.execute(sa.update(Enrollment).where(Enrollment.id.in_(ids),
                                                        Enrollment.lease_owner == self.worker_id)
                            .values(lease_owner=None, lease_until=None))

    def _settle_until_recorded(self, items: list[_Planned], results: dict[int, SendResult],
                               report: BatchReport) -> None:
        """Record what the providers answered, waiting out a database restart rather than losing it."""
        deadline = time.monotonic() + self.config.lease_seconds
        delay = 0.2
        while True:
            try:
                with self.rt.session() as session:
                    self.settle(session, items, results, report)
                return
            except sa.exc.OperationalError:
                # The messages are out: if the answers are not recorded, the touches turn
                # `unknown` when the lease expires. Retry while the lease still holds.
                if time.monotonic() + delay > deadline:
                    raise
                log.warning("database unavailable while recording sends; retrying in %.1fs", delay)
                time.sleep(delay)
                delay = min(delay * 2, 5.0)

    # -- 1. claim -----------------------------------------------------------------------------

    def db_now(self, session: so.Session, plus_seconds: float = 0) -> Any:
        """Return the database clock (leases use it, so workers on other hosts agree)."""
        if is_sqlite(session):
            return sa.func.datetime("now", f"{plus_seconds:+.0f} seconds") if plus_seconds else sa.func.datetime("now")
        return sa.func.now() + sa.func.make_interval(0, 0, 0, 0, 0, 0, plus_seconds) if plus_seconds else sa.func.now()

    def claim(self, session: so.Session) -> list[int]:
        """Lease a batch of due enrollments of active cadences."""
        query = (
            sa.select(Enrollment.id)
            .join(Cadence, Cadence.id == Enrollment.cadence_id)
            .where(Enrollment.state == "active", Enrollment.next_due_at <= self.rt.now(), Cadence.state == "active",
                   sa.or_(Enrollment.lease_until.is_(None), Enrollment.lease_until < self.db_now(session)))
            .order_by(Enrollment.next_due_at)
            .limit(self.batch_size)
        )
        if not is_sqlite(session):
            query = query.with_for_update(skip_locked=True, of=Enrollment)
        ids = list(session.scalars(query))
        if ids:
            session.execute(sa.update(Enrollment).where(Enrollment.id.in_(ids)).values(
                lease_owner=self.worker_id, lease_until=self.db_now(session, self.config.lease_seconds)))
        return ids

    def recover_expired_leases(self, session: so.Session) -> None:
        """A `sending` touch whose lease expired may or may not have gone out: a person decides."""
        expired = sa.select(Enrollment.id).where(Enrollment.lease_until < self.db_now(session))
        stuck = list(session.scalars(sa.update(Touch).where(Touch.status == "sending", Touch.enrollment_id.in_(expired))
                                     .values(status="unknown", error="the worker stopped while sending; "
                                             "resolve with `sequencer touches resolve`", updated_at=self.rt.now())
                                     .returning(Touch.enrollment_id)))
        if stuck:
            session.execute(sa.update(Enrollment).where(Enrollment.id.in_(stuck)).values(
                state="needs_review", paused_reason="unknown_send", next_due_at=None))
            log.warning("%d touches were left sending by a stopped worker; marked unknown", len(stuck))
        session.execute(sa.update(Enrollment).where(Enrollment.lease_until < self.db_now(session))
                        .values(lease_owner=None, lease_until=None))

    def resume_available_channels(self, session: so.Session) -> None:
        """Resume enrollments paused for a channel that can send again."""
        status = self.rt.plugins.channel_status(session)
        ready = [name for name, reason in status.items() if reason is None]
        if not ready:
            return
        current_step = sa.select(Step.id).where(Step.cadence_id == Enrollment.cadence_id,
                                                Step.position == Enrollment.step_position,
                                                Step.channel.in_(ready)).exists()
        session.execute(sa.update(Enrollment)
                        .where(Enrollment.state == "paused", Enrollment.paused_reason == "channel_unavailable",
                               current_step)
                        .values(state="active", paused_reason=None, next_due_at=self.rt.now()))

    def resume_after_out_of_office(self, session: so.Session) -> None:
        """Resume out-of-office pauses that are over; one with a rep's task still open goes back to waiting."""
        now = self.rt.now()
        task_open = sa.select(Task.id).where(Task.enrollment_id == Enrollment.id, Task.state == "open").exists()
        session.execute(sa.update(Enrollment)
                        .where(Enrollment.state == "paused", Enrollment.paused_reason == "out_of_office",
                               Enrollment.resume_at <= now)
                        .values(state=sa.case((task_open, "waiting_task"), else_="active"),
                                paused_reason=None, resume_at=None,
                                next_due_at=sa.case((task_open, None),
                                                    else_=sa.func.coalesce(Enrollment.next_due_at, now))))

    # -- 2. plan ----------------------------------------------------------------------------

    def plan(self, session: so.Session, ids: list[int], report: BatchReport) -> list[_Planned]:
        """Load the batch, decide each enrollment (sequencer.decide), write the decisions.

        Rendered touches stay `pending` (and leased) until arm() sends them.
        """
        now = self.rt.now()
        self._lock_throttled_rows(session, ids)
        batch = self._load(session, ids, now)
        decisions = decide_all({e.id: batch.facts[e.id] for e in batch.enrollments}, batch.counts, batch.limits)
        writes = _Writes()
        sending: list[tuple[Enrollment, Touch, int, OutboundTouch, bool]] = []
        for e in batch.enrollments:
            e.lease_owner = e.lease_until = None
            decision, step = decisions[e.id], batch.steps[e.id]
            touch = batch.existing.get((e.id, step.key)) if step is not None else None
            if isinstance(decision, Exit):
                writes.exit(e, decision.state, decision.reason)
            elif isinstance(decision, Repair):
                self._repair(e, touch, decision)
            elif isinstance(decision, Skip):
                self._skip_step(writes, e, step, touch, now, decision.reason, report)
            elif isinstance(decision, Defer):
                e.next_due_at = decision.until
                report.deferred += 1
            elif isinstance(decision, Pause):
                self._pause(e, decision, report)
            else:
                rules = batch.facts[e.id].rules
                variant = choose_variant(step, e.id)
                context = template_context(e.lead, batch.owners.get(e.lead.owner_id), e.mailbox,
                                           plugins=self.rt.plugins, base_url=self.rt.settings.web.base_url,
                                           secret_key=self.rt.settings.web.secret_key)
                touch = touch or writes.new_touch(e, step, now)
                touch.variant_key = variant.get("key") if variant else None
                touch.updated_at = now
                if isinstance(decision, OpenTask):
                    self._open_task(writes, e, step, rules, touch, variant, context, now, report)
                    continue
                outbound = self._render(e, step, rules, touch, variant, context, batch.owners, report)
                if outbound is not None:
                    number = batch.attempts.get(touch.id, 0) + 1 if touch.id else 1
                    sending.append((e, touch, number, outbound, rules.sender_kind == "mailbox"))
        session.flush()
        writes.save(session, now, self.rt.plugins)
        report.exited += len(writes.exits)
        # Keep the lease until settle(). A crash before a touch's group is armed leaves it `pending`:
        # whoever claims the enrollment next sends it (same Message-ID), nobody has to review it.
        if sending:
            session.execute(sa.update(Enrollment).where(Enrollment.id.in_([e.id for e, *_ in sending])).values(
                lease_owner=self.worker_id, lease_until=self.db_now(session, self.config.lease_seconds)))
        planned = []
        for e, touch, number, outbound, from_mailbox in sending:
            outbound.touch_id, outbound.attempt = touch.id, number
            planned.append(_Planned(e.id, touch.id, number, outbound, from_mailbox))
        return planned

    def _load(self, session: so.Session, ids: list[int], now: datetime) -> _Batch:
        """Load what the batch's decisions need, in a number of statements that does not grow with it."""
        query = (
            sa.select(Enrollment)
            # Only what this worker still holds: a lease that expired may have passed to another worker.
            .where(Enrollment.id.in_(ids), Enrollment.lease_owner == self.worker_id, Enrollment.state == "active",
                   Enrollment.next_due_at <= now)
            .options(so.joinedload(Enrollment.lead), so.joinedload(Enrollment.mailbox),
                     so.joinedload(Enrollment.cadence).selectinload(Cadence.steps))
        )
        if not is_sqlite(session):
            query = query.with_for_update(of=Enrollment)
        enrollments = list(session.scalars(query).unique())
        leads = [e.lead for e in enrollments]
        owners = {u.id: u for u in session.scalars(
            sa.select(User).where(User.id.in_({lead.owner_id for lead in leads if lead.owner_id})))}
        steps = {e.id: _current_step(e) for e in enrollments}
        # Every known channel's declaration: steps look theirs up, throttles count by them.
        known = {name: Rules.of(self.rt.plugins.channel(name), reason)
                 for name, reason in self.rt.plugins.channel_status(session).items()}
        channels = {s.channel for s in steps.values() if s is not None}
        blocked = {channel: suppressions.blocked_leads(session, leads, channel) for channel in channels}
        existing = {(t.enrollment_id, t.step_key): t for t in session.scalars(
            sa.select(Touch).where(Touch.enrollment_id.in_(ids)))}
        attempts = dict(session.execute(
            sa.select(TouchAttempt.touch_id, sa.func.max(TouchAttempt.number))
            .where(TouchAttempt.touch_id.in_([t.id for t in existing.values()]))
            .group_by(TouchAttempt.touch_id)).all()) if existing else {}
        sending = self.rt.settings.sending
        limits = Limits(now=now, contact_hours=self.contact_hours,
                        max_per_lead_per_day=sending.max_touches_per_lead_per_day,
                        max_per_domain_per_hour=sending.max_per_recipient_domain_per_hour)
        from_mailboxes = sorted(name for name, rules in known.items() if rules.sender_kind == "mailbox")
        to_email = sorted(name for name, rules in known.items() if rules.email)
        counts = Counts(mailbox=self._mailbox_counts(session, enrollments, from_mailboxes, now),
                        lead=self._lead_counts(session, leads, now),
                        domain=self._domain_counts(session, leads, to_email, now)
                        if limits.max_per_domain_per_hour else Counter())
        facts = {}
        for e in enrollments:
            step = steps[e.id]
            touch = existing.get((e.id, step.key)) if step is not None else None
            facts[e.id] = facts_for(e, step, known.get(step.channel, Rules()) if step else Rules(),
                                    blocked[step.channel].get(e.lead_id) if step else None, touch)
        return _Batch(enrollments, steps, owners, existing, attempts, facts, counts, limits)

    def _mailbox_counts(self, session: so.Session, enrollments: list[Enrollment], channels: list[str],
                        now: datetime) -> Counter:
        """Count each mailbox's touches of the last 24 hours on the channels that send from mailboxes."""
        return Counter(dict(session.execute(
            sa.select(Touch.mailbox_id, sa.func.count())
            .where(Touch.mailbox_id.in_({e.mailbox_id for e in enrollments if e.mailbox_id}),
                   Touch.channel.in_(channels), Touch.created_at > now - timedelta(hours=24),
                   Touch.status.in_(COUNTED))
            .group_by(Touch.mailbox_id)).all()))

    def _lead_counts(self, session: so.Session, leads: list[Lead], now: datetime) -> Counter:
        """Count each lead's touches of the last 24 hours, on every channel."""
        return Counter(dict(session.execute(
            sa.select(Touch.lead_id, sa.func.count())
            .where(Touch.lead_id.in_([lead.id for lead in leads]), Touch.created_at > now - timedelta(hours=24),
                   Touch.status.in_(COUNTED))
            .group_by(Touch.lead_id)).all()))

    def arm(self, session: so.Session, group: list[_Planned], rest: list[_Planned],
            report: BatchReport) -> list[_Planned]:
        """Commit a group's touches as `sending` and return those that may go out now.

        What happened since plan() is checked again: an enrollment that ended (a reply, an
        opt-out) or moved on is left alone; one whose mailbox was held meanwhile (by a refusal in
        an earlier group) waits with it. The rest of the batch keeps this worker's lease.
        """
        now = self.rt.now()
        query = (sa.select(Enrollment.id, Enrollment.state, Enrollment.lease_owner, Enrollment.exited_at,
                           Mailbox.state)
                 .outerjoin(Mailbox, Mailbox.id == Enrollment.mailbox_id)
                 .where(Enrollment.id.in_([item.enrollment_id for item in group])))
        if not is_sqlite(session):
            # Serialize with an exit or a hold being written for these enrollments by another process.
            query = query.with_for_update(of=Enrollment)
        current = {row[0]: row[1:] for row in session.execute(query)}
        ready, held, ended = [], [], []
        for item in group:
            state, owner, exited_at, mailbox_state = current[item.enrollment_id]
            if owner == self.worker_id and state == "active":
                (held if item.from_mailbox and mailbox_state == "held" else ready).append(item)
            elif exited_at is not None:
                ended.append(item.touch_id)
        if ready:
            session.execute(sa.update(Touch).where(Touch.id.in_([item.touch_id for item in ready]))
                            .values(status="sending", updated_at=now))
            session.execute(sa.insert(TouchAttempt), [
                {"touch_id": item.touch_id, "number": item.attempt, "started_at": now} for item in ready])
        if (ready or rest) and time.monotonic() - self._leased_at > self.config.lease_seconds / 4:
            # Renewed once a quarter of the lease is gone (unless it expired and another worker took
            # it), so a slow batch is not claimed twice and every group goes out with at least three
            # quarters of a lease to send and settle in. Not at every group: that rewrites the rest
            # of the batch each time.
            self._leased_at = time.monotonic()
            session.execute(sa.update(Enrollment).where(
                Enrollment.id.in_([item.enrollment_id for item in ready + rest]),
                Enrollment.lease_owner == self.worker_id,
            ).values(lease_until=self.db_now(session, self.config.lease_seconds)))
        if held:
            session.execute(sa.update(Enrollment).where(Enrollment.id.in_([item.enrollment_id for item in held]))
                            .values(state="paused", paused_reason="mailbox_held", lease_owner=None,
                                    lease_until=None))
            report.paused += len(held)
        if ended:
            session.execute(sa.update(Touch).where(Touch.id.in_(ended), Touch.status == "pending").values(
                status="skipped", error="not sent: the enrollment ended before its turn", updated_at=now))
        return ready

    def _lock_throttled_rows(self, session: so.Session, ids: list[int]) -> None:
        """Lock the batch's mailboxes and leads so that workers count caps one at a time.

        Without this two workers could both see a mailbox one below its cap and both send.
        Locks are taken in id order, so workers never wait on each other in a cycle. SQLite
        needs none: its write transaction (BEGIN IMMEDIATE) already admits one worker.
        """
        if is_sqlite(session):
            return
        pairs = session.execute(sa.select(Enrollment.lead_id, Enrollment.mailbox_id).where(Enrollment.id.in_(ids))).all()
        mailbox_ids = sorted({m for _, m in pairs if m})
        if mailbox_ids:
            session.execute(sa.select(Mailbox.id).where(Mailbox.id.in_(mailbox_ids)).order_by(Mailbox.id)
                            .with_for_update())
        session.execute(sa.select(Lead.id).where(Lead.id.in_(sorted({lead for lead, _ in pairs})))
                        .order_by(Lead.id).with_for_update())

    def _domain_counts(self, session: so.Session, leads: list[Lead], channels: list[str], now: datetime) -> Counter:
        """Count touches on email-address channels to each recipient domain in the last hour, serialized per domain."""
        domains = sorted({lead.domain for lead in leads if lead.domain})
        if not domains:
            return Counter()
        if not is_sqlite(session):
            names = sa.func.unnest(sa.bindparam("domains", domains, type_=sa.ARRAY(sa.Text))) \
                .table_valued("d").render_derived()
            session.execute(sa.select(sa.func.pg_advisory_xact_lock(sa.func.hashtext(names.c.d)))
                            .order_by(names.c.d))
        return Counter(dict(session.execute(
            sa.select(Lead.domain, sa.func.count()).join(Touch, Touch.lead_id == Lead.id)
            .where(Lead.domain.in_(domains), Touch.channel.in_(channels), Touch.created_at > now - timedelta(hours=1),
                   Touch.status.in_(COUNTED))
            .group_by(Lead.domain)).all()))

    def _render(self, e: Enrollment, step: Step, rules: Rules, touch: Touch, variant: Any, context: dict[str, Any],
                owners: dict[int, User], report: BatchReport) -> OutboundTouch | None:
        """Render the step and let its channel prepare it; None (the enrollment paused) when it cannot go out."""
        # A `thread = true` step continues the conversation the enrollment's earlier sends left.
        threaded = step.thread and e.thread_message_id is not None
        try:
            rendered = render_step(self.rt.renderer, step, variant, context, as_email=rules.email,
                                   thread_subject=e.thread_subject if threaded else None)
            outbound = OutboundTouch(
                touch_id=touch.id or 0, attempt=0, channel=step.channel, to_email=e.lead.email, to_phone=e.lead.phone,
                to_name=e.lead.full_name, sender=_sender(rules, e, owners), subject=rendered.subject,
                text=rendered.text, html=rendered.html, message_id=touch.message_id,
                unsubscribe_url=context["unsubscribe_url"],
                thread_id=e.thread_message_id if threaded else None,
                thread_references=e.thread_references if threaded else None,
                thread_subject=e.thread_subject if threaded else None,
            )
            # The channel assigns what it needs committed before the send (an email's Message-ID).
            self.rt.plugins.channel(step.channel).prepare(outbound)
        except (TemplateProblem, ValueError) as exc:
            touch.status, touch.error = TouchStatus.failed, exc.reason if isinstance(exc, TemplateProblem) else str(exc)
            self._pause(e, Pause("template_error"), report)
            return None
        touch.status, touch.error, touch.retry_at = TouchStatus.pending, None, None
        touch.subject, touch.body_text, touch.body_html = outbound.subject, outbound.text, outbound.html
        touch.message_id = outbound.message_id
        return outbound

    def _open_task(self, writes: _Writes, e: Enrollment, step: Step, rules: Rules, touch: Touch, variant: Any,
                   context: dict[str, Any], now: datetime, report: BatchReport) -> None:
        """Open a task for the lead's owner, as the step's channel declares it; the enrollment waits for it."""
        try:
            script = call_task_script(self.rt.renderer, self.rt.settings.templates_dir, step, variant, context)
            if script is not None:
                # A call script is printed stage by stage; its key and version say what the rep read.
                instructions = script.text
                touch.script_key, touch.script_version = script.script_key, script.script_version
            else:
                instructions = render_step(self.rt.renderer, step, variant, context, as_email=rules.email).text
        except TemplateProblem as exc:
            # A rep can still call: show the script's problem instead of blocking the call.
            instructions = f"(The call script could not be prepared: {exc.reason})"
        if rules.email:
            # The rep sends this draft by hand: it must carry what an automatic email carries.
            try:
                instructions = add_text_footer(instructions, self.rt.settings.sending.postal_address,
                                               context["unsubscribe_url"])
            except ValueError as exc:
                instructions = f"{instructions.rstrip()}\n\n(Do not send this yet: {exc}.)\n"
        lead = e.lead
        who = lead.full_name or lead.email or lead.phone or f"lead {lead.id}"
        title = f"{rules.task_verb} {who}" + (f" ({lead.company})" if lead.company else "")
        touch.status, touch.subject, touch.body_text = TouchStatus.pending, step.subject, instructions
        writes.tasks.append((touch, {"owner_id": lead.owner_id, "lead_id": lead.id, "enrollment_id": e.id,
                                     "kind": rules.task_kind, "title": title, "instructions": instructions,
                                     "due_at": now, "state": "open", "created_at": now,
                                     "priority": rules.task_priority}))
        e.state, e.next_due_at = EnrollmentState.waiting_task, None
        report.tasks += 1

    def _skip_step(self, writes: _Writes, e: Enrollment, step: Step, touch: Touch | None, now: datetime,
                   reason: str, report: BatchReport) -> None:
        touch = touch or writes.new_touch(e, step, now)
        touch.status, touch.error, touch.updated_at = TouchStatus.skipped, reason, now
        advance(e, now, self.rt.plugins)
        if e.exited_at:
            report.exited += 1

    def _repair(self, e: Enrollment, touch: Touch, decision: Repair) -> None:
        """Bring an enrollment in line with a touch that already exists for its step."""
        if decision.advance_from is not None:
            advance(e, decision.advance_from, self.rt.plugins)
            return
        if touch.status == TouchStatus.sending:
            touch.status = TouchStatus.unknown
        e.state, e.paused_reason, e.next_due_at = EnrollmentState.needs_review, "unknown_send", None

    def _pause(self, e: Enrollment, decision: Pause, report: BatchReport) -> None:
        e.state, e.paused_reason = EnrollmentState.paused, decision.reason
        if decision.detail:
            log.warning("enrollment %s paused as %s: %s", e.id, decision.reason, decision.detail)
        report.paused += 1

    # -- 3. send and settle -----------------------------------------------------------------

    def send(self, items: list[_Planned]) -> dict[int, SendResult]:
        """Hand each channel its part of the group; a crashing channel fails only its own touches."""
        by_channel: dict[str, list[_Planned]] = defaultdict(list)
        for item in items:
            by_channel[item.outbound.channel].append(item)
        results: dict[int, SendResult] = {}
        for channel_name, part in by_channel.items():
            channel = self.rt.plugins.channel(channel_name)
            try:
                answers = channel.send_batch([item.outbound for item in part])
            except Exception as exc:  # noqa: BLE001 - a plugin bug must not lose the batch's bookkeeping
                log.exception("channel %s crashed in send_batch", channel_name)
                answers = [SendResult(item.touch_id, accepted=False, provider_status="unknown",
                                      error=f"channel {channel_name} crashed: {exc!r}") for item in part]
            results.update({answer.touch_id: answer for answer in answers})
        return results

    def settle(self, session: so.Session, items: list[_Planned], results: dict[int, SendResult],
               report: BatchReport) -> None:
        now = self.rt.now()
        if not items:
            return
        query = (sa.select(Enrollment).where(Enrollment.id.in_([i.enrollment_id for i in items]))
                 .options(so.joinedload(Enrollment.lead), so.joinedload(Enrollment.cadence).selectinload(Cadence.steps)))
        touch_query = sa.select(Touch).where(Touch.id.in_([i.touch_id for i in items]))
        if not is_sqlite(session):
            # Serialize with another worker's plan() of the same enrollment (after a lease expired).
            query = query.with_for_update(of=Enrollment)
            # And with a plugin's report on a touch whose answer is still being recorded (a played
            # voicemail, reported by touch id): neither write is lost. After the enrollments, as plan() locks.
            touch_query = touch_query.with_for_update()
        enrollments = {e.id: e for e in session.scalars(query).unique()}
        touches = {t.id: t for t in session.scalars(touch_query)}
        # Each attempt's row is written set-wise at the end: finished (with its error, its retry), or
        # dropped when it does not count (the provider or our mailbox was the reason it failed).
        finished: list[dict[str, Any]] = []
        dropped: list[dict[str, Any]] = []
        held = _blamed_mailboxes(items, touches, results)
        sent_events: list[SentTouch] = []
        for item in items:
            touch, e = touches[item.touch_id], enrollments[item.enrollment_id]
            attempt = {"t": item.touch_id, "n": item.attempt, "error": None, "retry_at": None}
            finished.append(attempt)
            result = results.get(item.touch_id) or SendResult(item.touch_id, accepted=False, provider_status="unknown",
                                                              error="the channel returned no result for this touch")
            touch.updated_at = now
            e.lease_owner = e.lease_until = None
            touch.provider_status = result.provider_status
            # needs_review: housekeeping thought this worker had died; its answer is the truth.
            # Any other state: the enrollment ended while the message was out (a reply, an
            # opt-out): record the touch, never bring the enrollment back.
            live = e.state in ("active", "needs_review")
            if result.accepted:
                touch.provider_id = result.provider_id
                if not result.sent_when_reported:
                    touch.status, touch.sent_at, touch.error = TouchStatus.sent, now, None
                elif touch.status == TouchStatus.sending:
                    touch.status = TouchStatus.placed
                # Else its plugin's report came while this answer was on its way (calls go out one a
                # second, so a short call can end before its group is recorded): the report stands.
                if touch.message_id:
                    # The channel gave the message an id others can refer to: later steps thread on it.
                    _thread(e, touch)
                if live:
                    advance(e, now, self.rt.plugins)
                if touch.status in (TouchStatus.placed, TouchStatus.failed):
                    report.placed += 1
                    continue
                report.sent += 1
                sent_events.append(SentTouch(touch.id, e.lead_id, touch.channel, touch.step_key,
                                             touch.provider_id, touch.message_id, touch.sent_at))
                continue
            attempt["error"] = touch.error = result.error or result.recipient_problem
            if result.recipient_problem:
                touch.status = "failed"
                ended = self._recipient_problem(session, e, touch, result.recipient_problem, now)
                if ended:
                    report.exited += 1
                else:
                    if live:
                        advance(e, now, self.rt.plugins)
                    report.failed += 1
            elif touch.mailbox_id in held and item.from_mailbox and (result.sender_problem or result.retryable):
                # Surely not sent, and the mailbox is the reason (or was refused in the same group):
                # the lead is not blamed and the attempt is not counted against the touch.
                dropped.append(finished.pop())
                touch.error = f"not sent, mailbox held: {result.sender_problem or result.error}"
                if live:
                    touch.status = "pending"
                    e.state, e.paused_reason = "paused", "mailbox_held"
                    report.paused += 1
                else:
                    touch.status, touch.error = "failed", f"not retried, the enrollment ended: {touch.error}"
                    report.failed += 1
            elif result.defer_until is not None and live:
                # The provider asked us to slow down: not the lead's doing, so the attempt does not count.
                dropped.append(finished.pop())
                until = max(result.defer_until, now)
                touch.status, touch.retry_at = "pending", until
                touch.error = f"deferred by the provider until {iso_z(until)}: {result.error or 'slow down'}"
                e.state, e.paused_reason, e.next_due_at = "active", None, self._opening_after(e, item, until)
                report.deferred += 1
            elif (result.retryable or result.defer_until is not None) and not live:
                touch.status, touch.error = "failed", f"not retried, the enrollment ended: {result.error}"
                report.failed += 1
            elif result.retryable and item.attempt < self.config.max_attempts:
                retry_at = now + timedelta(seconds=self.config.retry_base_seconds * 2 ** (item.attempt - 1))
                attempt["retry_at"] = touch.retry_at = retry_at
                touch.status = "pending"
                e.state, e.paused_reason, e.next_due_at = "active", None, retry_at
                report.retried += 1
            elif result.retryable:
                touch.status = "failed"
                report.exited += len(end_enrollments(
                    session, [e.id], state="failed", now=now, plugins=self.rt.plugins,
                    reason=f"step {touch.step_key} failed after {item.attempt} attempts: {result.error}"))
                report.failed += 1
            elif result.provider_status != "unknown":
                # The provider refused this message for a reason that is not the lead's
                # address (too big, filtered...): the touch failed, the cadence goes on.
                touch.status = "failed"
                if live:
                    advance(e, now, self.rt.plugins)
                report.failed += 1
            else:
                touch.status = "unknown"
                if live:
                    e.state, e.paused_reason, e.next_due_at = "needs_review", "unknown_send", None
                report.failed += 1
        if held:
            for mailbox in session.scalars(sa.select(Mailbox).where(Mailbox.id.in_(list(held)))):
                hold_for_sender_problem(session, mailbox, f"the provider refused to send from it: "
                                                          f"{held[mailbox.id]}", now)
        if finished:
            session.execute(sa.update(_ATTEMPTS).values(finished_at=now).where(
                sa.tuple_(_ATTEMPTS.c.touch_id, _ATTEMPTS.c.number).in_([(a["t"], a["n"]) for a in finished])))
            noted = [a for a in finished if a["error"] is not None or a["retry_at"] is not None]
            if noted:
                session.execute(_NOTE_ATTEMPT, noted)
        if dropped:
            session.execute(_DROP_ATTEMPT, dropped)
        session.flush()
        for event in sent_events:
            self.rt.plugins.hook.touch_sent(touch=event)

    def _opening_after(self, e: Enrollment, item: _Planned, at: datetime) -> datetime:
        """Return when a deferred touch may go again: `at`, moved into its window (and contact hours)."""
        rules = Rules.of(self.rt.plugins.channel(item.outbound.channel), None)
        try:
            return opening(_calendar(e.cadence, e.lead), e.lead.zones(),
                           self.contact_hours if rules.contact_hours else None, at)
        except ValueError:  # NoOpening included: the next plan() pauses it and says why
            return at

    def _recipient_problem(self, session: so.Session, e: Enrollment, touch: Touch, problem: str,
                           now: datetime) -> bool:
        """Act on a provider's verdict on the recipient; return True when it ended the lead's cadences.

        "opted_out": an opt-out of every channel (COMPLIANCE.md rule 11); "unable_<channel>" (such as
        "unable_sms": a landline): the address is suppressed on this channel only, and the cadence goes
        on; anything else ("invalid_address"): the address is wrong, flagged and suppressed everywhere.
        """
        lead, rules = e.lead, Rules.of(self.rt.plugins.channel(touch.channel), None)
        if problem == "opted_out":
            from sequencer.optouts import opt_out

            opt_out(session, lead, now=now, source=f"{touch.channel}_provider", detail=touch.error or "",
                    plugins=self.rt.plugins, channel=touch.channel)
            return True
        address = lead_address(lead, rules.address_kind) if rules.address_kind else None
        if problem == f"unable_{touch.channel}":
            if address:
                suppressions.add(session, rules.address_kind, address, reason=f"{problem}: {touch.error}",
                                 source=f"{touch.channel}_send", now=now, channel=touch.channel)
            return False
        if rules.address_kind:
            setattr(lead, ADDRESS_FIELDS[rules.address_kind][1], True)
        if address:
            suppressions.add(session, rules.address_kind, address, reason=f"{problem}: {touch.error}",
                             source=f"{touch.channel}_send", now=now)
        end_for_lead(session, lead, state="bounced", reason=f"{problem}: {touch.error}", now=now,
                     plugins=self.rt.plugins)
        return True


_ATTEMPTS = TouchAttempt.__table__
_THIS_ATTEMPT = (_ATTEMPTS.c.touch_id == sa.bindparam("t")) & (_ATTEMPTS.c.number == sa.bindparam("n"))
_NOTE_ATTEMPT = sa.update(_ATTEMPTS).where(_THIS_ATTEMPT)  # its error and retry_at, from each row's keys
_DROP_ATTEMPT = sa.delete(_ATTEMPTS).where(_THIS_ATTEMPT)


def advance(e: Enrollment, executed_at: datetime, plugins: Plugins | None = None) -> None:
    """Move past the current step: waits count from `executed_at`; the last step finishes.

    Needs e.cadence (with steps) and e.lead loaded.
    """
    steps = e.cadence.steps
    e.step_position += 1
    e.anchor_at = executed_at
    e.state, e.paused_reason = "active", None
    if e.step_position >= len(steps):
        e.state, e.exit_reason, e.exited_at, e.next_due_at = "finished", "completed", executed_at, None
        if plugins is not None:
            plugins.hook.enrollment_exited(enrollment=e, reason="completed")
        return
    wait = Wait.parse(steps[e.step_position].wait)
    calendar = _calendar(e.cadence, e.lead)
    try:
        e.next_due_at = calendar.due_at(executed_at, wait)
    except NoOpening:
        # The engine pauses it as no_sending_window when it comes due.
        e.next_due_at = calendar.add_wait(executed_at, wait)


def _blamed_mailboxes(items: list[_Planned], touches: dict[int, Touch],
                      results: dict[int, SendResult]) -> dict[int, str]:
    """Return mailbox id -> the provider's words, for each mailbox a refusal blamed (`sender_problem`).

    Only touches sent from a mailbox hold one; a channel with its own senders keeps its own holds.
    """
    held: dict[int, str] = {}
    for item in items:
        result, mailbox_id = results.get(item.touch_id), touches[item.touch_id].mailbox_id
        if item.from_mailbox and result is not None and result.sender_problem and not result.accepted and mailbox_id is not None:
            held.setdefault(mailbox_id, result.sender_problem)
    return held


def _test_pause(point: str) -> None:
    """Stop here forever when a crash test asks for it (SEQUENCER_TEST_PAUSE=point), so it can kill -9 us."""
    if os.environ.get("SEQUENCER_TEST_PAUSE") != point:
        return
    marker = os.environ.get("SEQUENCER_TEST_PAUSE_FILE")
    if marker:
        with open(marker, "a", encoding="utf-8") as f:
            f.write(f"{os.getpid()} {point}\n")
    while True:
        time.sleep(3600)


def _current_step(e: Enrollment) -> Step | None:
    steps = e.cadence.steps
    return steps[e.step_position] if e.step_position < len(steps) else None


def _sender(rules: Rules, e: Enrollment, owners: dict[int, User]) -> Sender | None:
    """Return what the touch goes out from, as its channel declares: the enrollment's mailbox, or for a
    channel that sends from its own numbers, what the core knows of the lead's owner (the plugin
    chooses the number)."""
    if rules.sender_kind == "mailbox" and e.mailbox is not None:
        mb = e.mailbox
        return Sender(address=mb.address, display_name=mb.display_name, signature=mb.signature,
                      transport=mb.transport or {}, owner_id=mb.owner_id)
    owner = owners.get(e.lead.owner_id) if e.lead.owner_id else None
    if rules.sender_kind == "number" and owner is not None:
        return Sender(address=owner.phone or "", display_name=owner.name, owner_id=owner.id)
    return None


def _thread(e: Enrollment, touch: Touch) -> None:
    """Remember the conversation so `thread = true` steps reply in it."""
    if e.thread_message_id is None:
        e.thread_subject = touch.subject
    e.thread_references = " ".join(filter(None, [e.thread_references, touch.message_id]))
    e.thread_message_id = touch.message_id


def _calendar(cadence: Cadence, lead: Lead) -> LocalCalendar:
    return cadences.calendar_for_lead(cadence.schedule, lead)
