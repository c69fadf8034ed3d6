"""The core tables as SQLAlchemy 2 typed models; created only through Alembic."""
from __future__ import annotations

import enum
from datetime import datetime, timezone
from typing import Any

import sqlalchemy as sa
import sqlalchemy.orm as so
from sqlalchemy.dialects import postgresql

NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class UTCDateTime(sa.TypeDecorator[datetime]):
    """Store instants in UTC and always hand back aware datetimes, on SQLite too."""

    impl = sa.DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: sa.Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError(f"naive datetime {value!r} reached the database; every instant must be aware")
        value = value.astimezone(timezone.utc)
        # SQLite has no zone type: store naive UTC so that string comparison orders correctly.
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: sa.Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=timezone.utc)
        return value.astimezone(timezone.utc)


JSONType = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")


class Base(so.DeclarativeBase):
    metadata = sa.MetaData(naming_convention=NAMING_CONVENTION)
    type_annotation_map = {datetime: UTCDateTime(), dict[str, Any]: JSONType, list[Any]: JSONType}


class Role(enum.StrEnum):
    admin = "admin"
    ops = "ops"
    rep = "rep"


class EnrollmentState(enum.StrEnum):
    active = "active"
    waiting_task = "waiting_task"
    paused = "paused"
    needs_review = "needs_review"
    finished = "finished"
    replied = "replied"
    bounced = "bounced"
    opted_out = "opted_out"
    failed = "failed"
    removed = "removed"


# States in which an enrollment still belongs to its cadence; the others are exits.
LIVE_STATES = ("active", "waiting_task", "paused", "needs_review")


class TouchStatus(enum.StrEnum):
    pending = "pending"
    sending = "sending"
    # The provider took it, but it counts as sent only once its plugin reports it done
    # (SendResult.sent_when_reported: a voicemail drop, when its message was played).
    placed = "placed"
    sent = "sent"
    delivered = "delivered"
    failed = "failed"
    unknown = "unknown"
    completed = "completed"
    skipped = "skipped"


def _enum(cls: type[enum.Enum], name: str) -> sa.Enum:
    # Plain VARCHAR + CHECK keeps migrations simple on both databases.
    return sa.Enum(cls, name=name, native_enum=False, create_constraint=True, length=20,
                   values_callable=lambda e: [m.value for m in e])


class User(Base):
    __tablename__ = "users"
    id: so.Mapped[int] = so.mapped_column(primary_key=True)
    email: so.Mapped[str] = so.mapped_column(sa.String(320), unique=True)
    name: so.Mapped[str] = so.mapped_column(sa.String(200), default="")
    role: so.Mapped[Role] = so.mapped_column(_enum(Role, "role"))
    password_hash: so.Mapped[str | None] = so.mapped_column(sa.String(300))
    timezone: so.Mapped[str] = so.mapped_column(sa.String(64), default="UTC")
    phone: so.Mapped[str | None] = so.mapped_column(sa.String(32))
    locale: so.Mapped[str] = so.mapped_column(sa.String(5), default="en")  # en | ru
    # A deactivated user keeps their history (tasks, audit) but cannot sign in.
    active: so.Mapped[bool] = so.mapped_column(default=True)
    created_at: so.Mapped[datetime]


class LoginFailure(Base):
    """One wrong password for an address; counted in the database so every web worker agrees on the limit."""

    __tablename__ = "login_failures"
    __table_args__ = (sa.Index("ix_login_failures_email_failed_at", "email", "failed_at"),)
    id: so.Mapped[int] = so.mapped_column(primary_key=True)
    # Lower-cased as typed, whether or not such a user exists, so a guesser is limited either way.
    email: so.Mapped[str] = so.mapped_column(sa.String(320))
    failed_at: so.Mapped[datetime]


class Mailbox(Base):
    __tablename__ = "mailboxes"
    id: so.Mapped[int] = so.mapped_column(primary_key=True)
    address: so.Mapped[str] = so.mapped_column(sa.String(320), unique=True)
    display_name: so.Mapped[str] = so.mapped_column(sa.String(200), default="")
    owner_id: so.Mapped[int | None] = so.mapped_column(sa.ForeignKey("users.id"))
    # Per-mailbox SMTP/IMAP settings; empty means the email plugin's shared transport.
    transport: so.Mapped[dict[str, Any]] = so.mapped_column(default=dict)
    daily_cap: so.Mapped[int] = so.mapped_column(default=200)
    signature: so.Mapped[str] = so.mapped_column(sa.Text, default="")
    state: so.Mapped[str] = so.mapped_column(sa.String(20), default="active")
    held_reason: so.Mapped[str | None] = so.mapped_column(sa.Text)
    held_at: so.Mapped[datetime | None]
    # IMAP polling: settings (host, port, security, username, password, folder, mark_seen,
    # move_to), and where the poller got to. UIDs only mean something within one UIDVALIDITY.
    inbound: so.Mapped[dict[str, Any]] = so.mapped_column(default=dict)
    imap_uidvalidity: so.Mapped[int | None] = so.mapped_column(sa.BigInteger)
    imap_last_uid: so.Mapped[int | None] = so.mapped_column(sa.BigInteger)
    inbound_error: so.Mapped[str | None] = so.mapped_column(sa.Text)
    inbound_failures: so.Mapped[int] = so.mapped_column(default=0)
    inbound_checked_at: so.Mapped[datetime | None]
    inbound_retry_at: so.Mapped[datetime | None]
    created_at: so.Mapped[datetime]

    owner: so.Mapped[User | None] = so.relationship(lazy="raise")


class Lead(Base):
    __tablename__ = "leads"
    id: so.Mapped[int] = so.mapped_column(primary_key=True)
    email: so.Mapped[str | None] = so.mapped_column(sa.String(320))
    # Lowercased email: the duplicate key (case-insensitive) and the suppression lookup.
    email_normalized: so.Mapped[str | None] = so.mapped_column(sa.String(320), unique=True)
    phone: so.Mapped[str | None] = so.mapped_column(sa.String(32), index=True)
    external_id: so.Mapped[str | None] = so.mapped_column(sa.String(200), unique=True)
    first_name: so.Mapped[str | None] = so.mapped_column(sa.String(200))
    last_name: so.Mapped[str | None] = so.mapped_column(sa.String(200))
    company: so.Mapped[str | None] = so.mapped_column(sa.String(300))
    domain: so.Mapped[str | None] = so.mapped_column(sa.String(255), index=True)
    title: so.Mapped[str | None] = so.mapped_column(sa.String(300))
    country: so.Mapped[str | None] = so.mapped_column(sa.String(2))
    timezone: so.Mapped[str | None] = so.mapped_column(sa.String(64))
    timezone_source: so.Mapped[str | None] = so.mapped_column(sa.String(20))  # given | inferred | ambiguous
    candidate_zones: so.Mapped[list[Any]] = so.mapped_column(default=list)
    owner_id: so.Mapped[int | None] = so.mapped_column(sa.ForeignKey("users.id"), index=True)
    custom: so.Mapped[dict[str, Any]] = so.mapped_column(default=dict)
    consents: so.Mapped[dict[str, Any]] = so.mapped_column(default=dict)
    email_invalid: so.Mapped[bool] = so.mapped_column(default=False)
    phone_wrong: so.Mapped[bool] = so.mapped_column(default=False)
    opted_out_at: so.Mapped[datetime | None]
    created_at: so.Mapped[datetime]
    updated_at: so.Mapped[datetime]

    owner: so.Mapped[User | None] = so.relationship(lazy="raise")

    @property
    def full_name(self) -> str:
        return " ".join(p for p in (self.first_name, self.last_name) if p)

    def zones(self) -> tuple[str, ...]:
        """Return the zones the lead may be in: the known one, else every candidate."""
        if self.timezone:
            return (self.timezone,)
        return tuple(self.candidate_zones or ())


class Cadence(Base):
    """One version of a cadence; versions of the same name share state changes."""

    __tablename__ = "cadences"
    __table_args__ = (sa.UniqueConstraint("name", "version", name="uq_cadences_name_version"),)
    id: so.Mapped[int] = so.mapped_column(primary_key=True)
    name: so.Mapped[str] = so.mapped_column(sa.String(200), index=True)
    version: so.Mapped[int]
    state: so.Mapped[str] = so.mapped_column(sa.String(20), default="active")
    description: so.Mapped[str] = so.mapped_column(sa.Text, default="")
    schedule: so.Mapped[dict[str, Any]] = so.mapped_column(default=dict)
    exit_rules: so.Mapped[dict[str, Any]] = so.mapped_column(default=dict)
    # Hash of the normalized definition: applying an unchanged file changes nothing.
    definition_hash: so.Mapped[str] = so.mapped_column(sa.String(64))
    created_at: so.Mapped[datetime]

    steps: so.Mapped[list[Step]] = so.relationship(
        back_populates="cadence", order_by="Step.position", lazy="selectin", cascade="all, delete-orphan"
    )


class Step(Base):
    __tablename__ = "steps"
    __table_args__ = (sa.UniqueConstraint("cadence_id", "key", name="uq_steps_cadence_id_key"),)
    id: so.Mapped[int] = so.mapped_column(primary_key=True)
    cadence_id: so.Mapped[int] = so.mapped_column(sa.ForeignKey("cadences.id", ondelete="CASCADE"))
    key: so.Mapped[str] = so.mapped_column(sa.String(100))
    position: so.Mapped[int]
    channel: so.Mapped[str] = so.mapped_column(sa.String(20))  # email | sms | voice | task
    action: so.Mapped[str] = so.mapped_column(sa.String(10))  # auto | manual
    wait: so.Mapped[str] = so.mapped_column(sa.String(40), default="0d")
    subject: so.Mapped[str | None] = so.mapped_column(sa.Text)
    template: so.Mapped[str | None] = so.mapped_column(sa.String(300))
    body: so.Mapped[str | None] = so.mapped_column(sa.Text)
    thread: so.Mapped[bool] = so.mapped_column(default=False)
    variants: so.Mapped[list[Any]] = so.mapped_column(default=list)

    cadence: so.Mapped[Cadence] = so.relationship(back_populates="steps", lazy="raise")


class Enrollment(Base):
    __tablename__ = "enrollments"
    __table_args__ = (
        # The engine's claim query walks this index: due live enrollments, oldest first.
        sa.Index("ix_enrollments_state_next_due_at", "state", "next_due_at"),
        # Housekeeping looks for expired leases every tick: only leased rows are indexed.
        sa.Index("ix_enrollments_lease_until", "lease_until", sqlite_where=sa.text("lease_until IS NOT NULL"),
                 postgresql_where=sa.text("lease_until IS NOT NULL")),
        # One live enrollment per lead per cadence (across its versions).
        sa.Index(
            "uq_enrollments_live_lead_cadence", "lead_id", "cadence_name", unique=True,
            sqlite_where=sa.text("exited_at IS NULL"), postgresql_where=sa.text("exited_at IS NULL"),
        ),
    )
    id: so.Mapped[int] = so.mapped_column(primary_key=True)
    lead_id: so.Mapped[int] = so.mapped_column(sa.ForeignKey("leads.id", ondelete="CASCADE"), index=True)
    cadence_id: so.Mapped[int] = so.mapped_column(sa.ForeignKey("cadences.id"), index=True)
    cadence_name: so.Mapped[str] = so.mapped_column(sa.String(200))
    mailbox_id: so.Mapped[int | None] = so.mapped_column(sa.ForeignKey("mailboxes.id"), index=True)
    state: so.Mapped[str] = so.mapped_column(_enum(EnrollmentState, "enrollment_state"), default="active")
    # Position of the next step to run; len(steps) means finished.
    step_position: so.Mapped[int] = so.mapped_column(default=0)
    next_due_at: so.Mapped[datetime | None]
    # When the previous step was executed: waits count from here.
    anchor_at: so.Mapped[datetime]
    paused_reason: so.Mapped[str | None] = so.mapped_column(sa.String(100))
    resume_at: so.Mapped[datetime | None]
    exit_reason: so.Mapped[str | None] = so.mapped_column(sa.Text)
    exited_at: so.Mapped[datetime | None]
    lease_owner: so.Mapped[str | None] = so.mapped_column(sa.String(100))
    lease_until: so.Mapped[datetime | None]
    # The first email of the cadence, so `thread = true` steps reply in its conversation.
    thread_message_id: so.Mapped[str | None] = so.mapped_column(sa.String(300))
    thread_subject: so.Mapped[str | None] = so.mapped_column(sa.Text)
    thread_references: so.Mapped[str | None] = so.mapped_column(sa.Text)
    enrolled_at: so.Mapped[datetime]

    lead: so.Mapped[Lead] = so.relationship(lazy="raise")
    cadence: so.Mapped[Cadence] = so.relationship(lazy="raise")
    mailbox: so.Mapped[Mailbox | None] = so.relationship(lazy="raise")


class Touch(Base):
    __tablename__ = "touches"
    __table_args__ = (
        # At-most-once per (enrollment, step), enforced by the database.
        sa.UniqueConstraint("enrollment_id", "step_key", name="uq_touches_enrollment_id_step_key"),
        sa.Index("ix_touches_status_retry", "status"),
        # Throttles count a mailbox's and a lead's touches of the last 24 hours.
        sa.Index("ix_touches_mailbox_id_created_at", "mailbox_id", "created_at"),
        sa.Index("ix_touches_lead_id_created_at", "lead_id", "created_at"),
    )
    id: so.Mapped[int] = so.mapped_column(primary_key=True)
    enrollment_id: so.Mapped[int] = so.mapped_column(sa.ForeignKey("enrollments.id", ondelete="CASCADE"))
    step_key: so.Mapped[str] = so.mapped_column(sa.String(100))
    lead_id: so.Mapped[int] = so.mapped_column(sa.ForeignKey("leads.id", ondelete="CASCADE"))
    mailbox_id: so.Mapped[int | None] = so.mapped_column(sa.ForeignKey("mailboxes.id"))
    channel: so.Mapped[str] = so.mapped_column(sa.String(20))
    action: so.Mapped[str] = so.mapped_column(sa.String(10), default="auto")
    variant_key: so.Mapped[str | None] = so.mapped_column(sa.String(100))
    status: so.Mapped[str] = so.mapped_column(_enum(TouchStatus, "touch_status"), default="pending")
    provider_status: so.Mapped[str | None] = so.mapped_column(sa.Text)  # the provider's own words
    provider_id: so.Mapped[str | None] = so.mapped_column(sa.String(300))
    message_id: so.Mapped[str | None] = so.mapped_column(sa.String(300), unique=True)
    subject: so.Mapped[str | None] = so.mapped_column(sa.Text)
    body_text: so.Mapped[str | None] = so.mapped_column(sa.Text)
    body_html: so.Mapped[str | None] = so.mapped_column(sa.Text)
    error: so.Mapped[str | None] = so.mapped_column(sa.Text)
    outcome: so.Mapped[str | None] = so.mapped_column(sa.String(50))
    notes: so.Mapped[str | None] = so.mapped_column(sa.Text)
    # The call script of a call task and its version (sequencer.scripts.script_version), so
    # call stats group by the wording the rep had.
    script_key: so.Mapped[str | None] = so.mapped_column(sa.String(300))
    script_version: so.Mapped[str | None] = so.mapped_column(sa.String(16))
    due_at: so.Mapped[datetime | None]
    sent_at: so.Mapped[datetime | None]
    retry_at: so.Mapped[datetime | None]
    created_at: so.Mapped[datetime]
    updated_at: so.Mapped[datetime]

    enrollment: so.Mapped[Enrollment] = so.relationship(lazy="raise")
    lead: so.Mapped[Lead] = so.relationship(lazy="raise")


class TouchAttempt(Base):
    __tablename__ = "touch_attempts"
    __table_args__ = (sa.UniqueConstraint("touch_id", "number", name="uq_touch_attempts_touch_id_number"),)
    id: so.Mapped[int] = so.mapped_column(primary_key=True)
    touch_id: so.Mapped[int] = so.mapped_column(sa.ForeignKey("touches.id", ondelete="CASCADE"))
    number: so.Mapped[int]
    started_at: so.Mapped[datetime]
    finished_at: so.Mapped[datetime | None]
    error: so.Mapped[str | None] = so.mapped_column(sa.Text)
    retry_at: so.Mapped[datetime | None]


class Task(Base):
    __tablename__ = "tasks"
    __table_args__ = (sa.Index("ix_tasks_owner_state_due", "owner_id", "state", "due_at"),)
    id: so.Mapped[int] = so.mapped_column(primary_key=True)
    owner_id: so.Mapped[int | None] = so.mapped_column(sa.ForeignKey("users.id"))
    # No lead for admin alerts (a held mailbox).
    lead_id: so.Mapped[int | None] = so.mapped_column(sa.ForeignKey("leads.id", ondelete="CASCADE"), index=True)
    touch_id: so.Mapped[int | None] = so.mapped_column(sa.ForeignKey("touches.id", ondelete="CASCADE"))
    enrollment_id: so.Mapped[int | None] = so.mapped_column(sa.ForeignKey("enrollments.id", ondelete="CASCADE"))
    kind: so.Mapped[str] = so.mapped_column(sa.String(20))  # call | email | sms | task | reply | alert
    title: so.Mapped[str] = so.mapped_column(sa.Text)
    instructions: so.Mapped[str] = so.mapped_column(sa.Text, default="")
    due_at: so.Mapped[datetime]
    state: so.Mapped[str] = so.mapped_column(sa.String(20), default="open")  # open | done | skipped
    priority: so.Mapped[int] = so.mapped_column(default=0)
    outcome: so.Mapped[str | None] = so.mapped_column(sa.String(50))
    notes: so.Mapped[str | None] = so.mapped_column(sa.Text)
    completed_at: so.Mapped[datetime | None]
    created_at: so.Mapped[datetime]

    lead: so.Mapped[Lead | None] = so.relationship(lazy="raise")
    owner: so.Mapped[User | None] = so.relationship(lazy="raise")
    touch: so.Mapped[Touch | None] = so.relationship(lazy="raise")


class Call(Base):
    """One call a rep logged (a call task done with an outcome): what `calls stats` counts.

    Copied from the task and its touch when the call is logged, so stats read one table. It
    holds no personal data (notes stay on the task) and outlives an erased lead.
    """

    __tablename__ = "calls"
    __table_args__ = (sa.Index("ix_calls_script_key_script_version", "script_key", "script_version"),)
    id: so.Mapped[int] = so.mapped_column(primary_key=True)
    task_id: so.Mapped[int | None] = so.mapped_column(sa.ForeignKey("tasks.id", ondelete="SET NULL"), unique=True)
    touch_id: so.Mapped[int | None] = so.mapped_column(sa.ForeignKey("touches.id", ondelete="SET NULL"))
    lead_id: so.Mapped[int | None] = so.mapped_column(sa.ForeignKey("leads.id", ondelete="SET NULL"), index=True)
    rep_id: so.Mapped[int | None] = so.mapped_column(sa.ForeignKey("users.id"), index=True)
    cadence_name: so.Mapped[str | None] = so.mapped_column(sa.String(200), index=True)
    script_key: so.Mapped[str | None] = so.mapped_column(sa.String(300))
    script_version: so.Mapped[str | None] = so.mapped_column(sa.String(16))
    outcome: so.Mapped[str] = so.mapped_column(sa.String(50))
    logged_at: so.Mapped[datetime] = so.mapped_column(index=True)


class CallObjection(Base):
    """An objection raised on a call, by key: a row each, so SQL counts them and the calls that still met."""

    __tablename__ = "call_objections"
    call_id: so.Mapped[int] = so.mapped_column(sa.ForeignKey("calls.id", ondelete="CASCADE"), primary_key=True)
    key: so.Mapped[str] = so.mapped_column(sa.String(50), primary_key=True, index=True)


class InboundEvent(Base):
    __tablename__ = "inbound_events"
    id: so.Mapped[int] = so.mapped_column(primary_key=True)
    kind: so.Mapped[str] = so.mapped_column(sa.String(30))  # reply | auto_reply | bounce | complaint | opt_out | ...
    channel: so.Mapped[str] = so.mapped_column(sa.String(20))
    received_at: so.Mapped[datetime]
    lead_id: so.Mapped[int | None] = so.mapped_column(sa.ForeignKey("leads.id", ondelete="SET NULL"), index=True)
    touch_id: so.Mapped[int | None] = so.mapped_column(sa.ForeignKey("touches.id", ondelete="SET NULL"))
    mailbox_id: so.Mapped[int | None] = so.mapped_column(sa.ForeignKey("mailboxes.id"))
    message_id: so.Mapped[str | None] = so.mapped_column(sa.String(300), index=True)
    summary: so.Mapped[str] = so.mapped_column(sa.Text, default="")
    classification: so.Mapped[dict[str, Any]] = so.mapped_column(default=dict)
    raw: so.Mapped[str | None] = so.mapped_column(sa.Text)  # kept for audit; erased with the lead


class Suppression(Base):
    __tablename__ = "suppressions"
    __table_args__ = (sa.UniqueConstraint("kind", "value_hash", "channel", name="uq_suppressions_kind_hash_channel"),)
    id: so.Mapped[int] = so.mapped_column(primary_key=True)
    kind: so.Mapped[str] = so.mapped_column(sa.String(10))  # email | phone | domain
    value: so.Mapped[str | None] = so.mapped_column(sa.String(320))  # None once the person is erased
    value_hash: so.Mapped[str] = so.mapped_column(sa.String(64))
    channel: so.Mapped[str] = so.mapped_column(sa.String(20), default="all")
    reason: so.Mapped[str] = so.mapped_column(sa.Text, default="")
    source: so.Mapped[str] = so.mapped_column(sa.String(50), default="manual")
    created_at: so.Mapped[datetime]


class PluginState(Base):
    __tablename__ = "plugin_states"
    name: so.Mapped[str] = so.mapped_column(sa.String(100), primary_key=True)
    enabled: so.Mapped[bool] = so.mapped_column(default=True)
    settings: so.Mapped[dict[str, Any]] = so.mapped_column(default=dict)
    updated_at: so.Mapped[datetime]


class AuditEntry(Base):
    __tablename__ = "audit_log"
    id: so.Mapped[int] = so.mapped_column(primary_key=True)
    at: so.Mapped[datetime] = so.mapped_column(index=True)
    actor: so.Mapped[str] = so.mapped_column(sa.String(320))
    action: so.Mapped[str] = so.mapped_column(sa.String(100))
    object_type: so.Mapped[str] = so.mapped_column(sa.String(50))
    object_id: so.Mapped[str | None] = so.mapped_column(sa.String(100))
    detail: so.Mapped[dict[str, Any]] = so.mapped_column(default=dict)


class PhoneNumber(Base):
    """A number we text and call from: a rep's own (owner set) or the team pool's (no owner)."""

    __tablename__ = "phone_numbers"
    id: so.Mapped[int] = so.mapped_column(primary_key=True)
    number: so.Mapped[str] = so.mapped_column(sa.String(20), unique=True)  # E.164
    owner_id: so.Mapped[int | None] = so.mapped_column(sa.ForeignKey("users.id"), index=True)
    created_at: so.Mapped[datetime]
    # The per-number rate and daily cap hold across workers, so they live on the row, read
    # locked and written back by sequencer.numbers.reserve_slots. Integers: slot arithmetic
    # in microseconds, the same on SQLite and PostgreSQL.
    # Microseconds since the epoch (UTC) from which the number's next message may go.
    next_slot_us: so.Mapped[int] = so.mapped_column(sa.BigInteger, default=0)
    # The UTC day (days since the epoch) that cap_count counts, and how many slots it has given.
    cap_day: so.Mapped[int] = so.mapped_column(default=0)
    cap_count: so.Mapped[int] = so.mapped_column(default=0)

    owner: so.Mapped[User | None] = so.relationship(lazy="raise")


class LeadNumber(Base):
    """The number a lead hears from, fixed at the first text or call so the conversation stays on one number."""

    __tablename__ = "lead_numbers"
    lead_id: so.Mapped[int] = so.mapped_column(sa.ForeignKey("leads.id", ondelete="CASCADE"), primary_key=True)
    phone_number_id: so.Mapped[int] = so.mapped_column(sa.ForeignKey("phone_numbers.id", ondelete="CASCADE"),
                                                       index=True)
    assigned_at: so.Mapped[datetime]


class RateSlot(Base):
    """The next free slot of a rate shared by every worker that is not one number's (a provider account's calls).

    Like PhoneNumber.next_slot_us, an integer so that one conditional UPDATE takes a slot on
    SQLite and PostgreSQL alike (sequencer.dialing.account_slot).
    """

    __tablename__ = "rate_slots"
    key: so.Mapped[str] = so.mapped_column(sa.String(100), primary_key=True)
    # Microseconds since the epoch (UTC) from which the next call may start.
    next_slot_us: so.Mapped[int] = so.mapped_column(sa.BigInteger, default=0)
