"""Fuzz: mutations of the bounce corpus go through reading and acting without an exception, and a
message that still carries a notification signal is never read as a human reply.

1,000 messages are made from ../shared/data/bounces/*.eml by a seeded random.Random (the same
messages on every run): truncated, headers dropped or duplicated, unknown charsets, broken
transfer encodings and MIME boundaries, random bytes (NUL included), line endings, a 100 KB
header, a 20 MB attachment. Every one is read; every fifth (200) is also acted on (handle_email) in a world
where the corpus's recipients are leads and the Message-IDs the corpus returns are our touches,
so that suppressing, opting out, holding the mailbox and retrying all run.
"""
from __future__ import annotations

import random
import re
from collections import Counter
from dataclasses import dataclass
from datetime import datetime
from email import message_from_bytes
from email.policy import compat32
from pathlib import Path
from typing import Callable

import pytest
import sqlalchemy as sa

from bench.bounce_corpus import CORPUS
from sequencer.leads import LeadDataError, email_key
from sequencer.models import Cadence, Enrollment, InboundEvent, Lead, Mailbox, Step, Touch, User
from sequencer.testing.world import REP
from sequencer.testing import IN_CI
from sequencer_email.inbound import handle_email
from sequencer_email.reading import read_message

if not CORPUS.is_dir():
    # The corpus is shared/ beside the checkout; CI always lays it there, so missing it there is a failure.
    if IN_CI:
        pytest.fail(f"CI=true and the bounce corpus is not at {CORPUS}", pytrace=False)
    pytest.skip(f"bounce corpus not found at {CORPUS}", allow_module_level=True)

SEED = 20260302
MESSAGES = 1000
ACT_EVERY = 5  # acting costs a transaction; reading every message and acting on every fifth keeps it fast
# The slow mutations, rationed: a 100 KB header on about 4 % of the messages, the 20 MB attachment
# on messages 0 and 500 (both acted on).
HUGE_HEADER_SHARE = 0.04
HUGE_ATTACHMENT_EVERY = 500
FILES = sorted(CORPUS.glob("*.eml"))
ATTACHMENT = b"".join(b"QUJDRA" * 12 + b"\r\n" for _ in range(20 * 1024 * 1024 // 74))  # 20 MB of base64


def _headers_end(raw: bytes) -> int:
    found = re.search(rb"\r?\n\r?\n", raw)
    return found.start() if found else len(raw)


def _header_lines(raw: bytes) -> list[bytes]:
    """The header block as whole fields (a field with its continuation lines)."""
    return re.findall(rb"[^\s:][^\n]*\n(?:[ \t][^\n]*\n)*", raw[:_headers_end(raw) + 1])


def truncate(raw: bytes, rng: random.Random) -> bytes:
    return raw[:rng.randrange(len(raw) + 1)]


def drop_header(raw: bytes, rng: random.Random) -> bytes:
    fields = _header_lines(raw)
    return raw.replace(rng.choice(fields), b"", 1) if fields else raw


def duplicate_header(raw: bytes, rng: random.Random) -> bytes:
    fields = _header_lines(raw)
    if not fields:
        return raw
    field = rng.choice(fields)
    return raw.replace(field, field + field, 1)


def bad_charset(raw: bytes, rng: random.Random) -> bytes:
    charset = rng.choice([b"x-no-such-charset", b"utf-7", b"\xff\xfe", b"", b"iso-2022-jp-ext", b"unicode-1-1-utf-7"])
    raw = re.sub(rb'charset="?[\w.:-]*"?', b'charset="' + charset + b'"', raw, flags=re.I)
    word = b"=?" + charset + b"?B?" + bytes(rng.randrange(256) for _ in range(12)).hex().encode() + b"?="
    return re.sub(rb"^Subject:", b"Subject: " + word, raw, count=1, flags=re.I | re.M)


def bad_encoding(raw: bytes, rng: random.Random) -> bytes:
    encoding = rng.choice([b"base64", b"quoted-printable", b"x-uuencode", b"8bit", b"binary", b"bogus"])
    raw = re.sub(rb"^Content-Transfer-Encoding:[^\n]*", b"Content-Transfer-Encoding: " + encoding, raw,
                 flags=re.I | re.M)
    # Invalid UTF-8, a stray soft line break, base64 padding in the middle.
    at = rng.randrange(len(raw) + 1)
    junk = rng.choice([b"\xc3\x28\xa0\xa1", b"=\r\n=ZZ=", b"====", b"\xe2\x82", b"=?utf-8?Q?=FF?="])
    return raw[:at] + junk + raw[at:]


def broken_mime(raw: bytes, rng: random.Random) -> bytes:
    choice = rng.randrange(3)
    if choice == 0:  # the declared boundary is never used
        return re.sub(rb'boundary="?([^";\s]+)"?', b'boundary="no-such-boundary"', raw, count=1, flags=re.I)
    if choice == 1:  # no boundary declared at all
        return re.sub(rb';\s*boundary="?[^";\s]+"?', b"", raw, count=1, flags=re.I)
    return re.sub(rb"^Content-Type:[^\n]*", b"Content-Type: multipart/report; report-type=delivery-status",
                  raw, count=1, flags=re.I | re.M)


def random_bytes(raw: bytes, rng: random.Random) -> bytes:
    data = bytearray(raw)
    for _ in range(rng.randint(1, 40)):
        if data:
            data[rng.randrange(len(data))] = rng.randrange(256)
    at = rng.randrange(len(data) + 1)
    data[at:at] = bytes(rng.randrange(256) for _ in range(rng.randint(1, 64)))
    return bytes(data)


def huge_header(raw: bytes, rng: random.Random) -> bytes:
    name = rng.choice([b"X-Junk", b"Subject", b"References", b"To", b"Received"])
    if name == b"References":
        value = b" ".join(b"<%d.ref@fuzz.example>" % i for i in range(100 * 1024 // 22))
    elif name == b"To":
        value = b", ".join(b"person%d@fuzz.example" % i for i in range(100 * 1024 // 24))
    else:
        value = b"".join(rng.choice([b"word ", b"\r\n ", b"=?utf-8?B?0L/RgNC40LLQtdGC?= "]) for _ in range(20000))
    return name + b": " + value[:100 * 1024] + b"\r\n" + raw


def line_endings(raw: bytes, rng: random.Random) -> bytes:
    return raw.replace(b"\n", rng.choice([b"\r", b"\r\r\n", b"\n\n"]))


def header_body_merged(raw: bytes, rng: random.Random) -> bytes:
    end = _headers_end(raw)
    return raw[:end] + re.sub(rb"^\r?\n\r?\n", b"\n", raw[end:], count=1)


MUTATIONS: tuple[Callable[[bytes, random.Random], bytes], ...] = (
    truncate, drop_header, duplicate_header, bad_charset, bad_encoding, broken_mime, random_bytes, line_endings,
    header_body_merged,
)


def huge_attachment(raw: bytes) -> bytes:
    """Wrap the message with a 20 MB attachment, as a person forwarding it with a file might."""
    return (b"From: someone@fuzz.example\r\nTo: " + REP.encode() + b"\r\nSubject: Fwd: see attached\r\n"
            b"MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=\"FUZZ\"\r\n\r\n"
            b"--FUZZ\r\nContent-Type: message/rfc822\r\n\r\n" + raw + b"\r\n"
            b"--FUZZ\r\nContent-Type: application/octet-stream\r\nContent-Disposition: attachment; filename=big.bin\r\n"
            b"Content-Transfer-Encoding: base64\r\n\r\n" + ATTACHMENT + b"--FUZZ--\r\n")


@dataclass
class Mutant:
    number: int
    source: str
    mutations: tuple[str, ...]
    raw: bytes


def mutants() -> list[Mutant]:
    rng = random.Random(SEED)
    made = []
    for number in range(MESSAGES):
        source = rng.choice(FILES)
        raw = source.read_bytes()
        chosen = rng.sample(MUTATIONS, rng.randint(1, 3))
        for mutate in chosen:
            raw = mutate(raw, rng)
        names = tuple(m.__name__ for m in chosen)
        if rng.random() < HUGE_HEADER_SHARE:
            raw, names = huge_header(raw, rng), names + ("huge_header",)
        if number % HUGE_ATTACHMENT_EVERY == 0:
            raw, names = huge_attachment(raw), names + ("huge_attachment",)
        made.append(Mutant(number, source.name, names, raw))
    return made


def notification_signals(raw: bytes) -> list[str]:
    """The signals that make a message a mail system's (RFC 3464, RFC 3834, RFC 5321 null path), as it reads now."""
    msg = message_from_bytes(raw, policy=compat32)
    signals = []
    if any(str(v).strip() == "<>" for v in msg.get_all("Return-Path", [])):
        signals.append("null Return-Path")
    if any(re.search(r"mailer-daemon|postmaster", str(v), re.I) for v in msg.get_all("From", [])):
        signals.append("From mailer-daemon/postmaster")
    if msg.get_content_type() == "multipart/report":
        signals.append("multipart/report")
    if any(str(v).strip().lower() not in ("", "no") for v in msg.get_all("Auto-Submitted", [])):
        signals.append("Auto-Submitted")
    return signals


def build_world(session, now: datetime) -> None:
    """Our rep, an admin, a two-step cadence, and a lead with a sent touch for each recipient the corpus names.

    A touch's Message-ID is the one the corpus message returns, so reports match our messages by it.
    """
    session.add(User(email="admin@acme.example", role="admin", created_at=now))
    mailbox = Mailbox(address=REP, created_at=now)
    cadence = Cadence(name="fuzz", version=1, definition_hash="fuzz", created_at=now)
    session.add_all([mailbox, cadence])
    session.flush()
    session.add_all([Step(cadence_id=cadence.id, key=key, position=i, channel="email", action="auto")
                     for i, key in enumerate(("intro", "bump"))])
    references: dict[str, str] = {}
    for path in FILES:
        reading = read_message(path.read_bytes())
        for address in reading.addresses:
            try:
                key = email_key(address.address)
            except LeadDataError:
                continue
            if reading.references and reading.references[0] not in references.values():
                references.setdefault(key, reading.references[0])
            references.setdefault(key, "")
    for number, (key, message_id) in enumerate(sorted(references.items())):
        lead = Lead(email=key, email_normalized=key, created_at=now, updated_at=now)
        session.add(lead)
        session.flush()
        enrollment = Enrollment(lead_id=lead.id, cadence_id=cadence.id, cadence_name="fuzz", state="active",
                                step_position=1, anchor_at=now, enrolled_at=now, next_due_at=now)
        session.add(enrollment)
        session.flush()
        session.add(Touch(enrollment_id=enrollment.id, step_key="intro", lead_id=lead.id, mailbox_id=mailbox.id,
                          channel="email", status="sent", message_id=message_id or f"<fuzz-{number}@acme.example>",
                          created_at=now, updated_at=now, sent_at=now))


def test_mutated_corpus_reads_and_acts_without_an_exception(runtime) -> None:
    made = mutants()
    with runtime.session() as session:
        build_world(session, runtime.now())
    kinds: Counter[str] = Counter()
    read_as_reply: list[str] = []
    for mutant in made:
        reading = read_message(mutant.raw, today=runtime.now().date())
        kinds[reading.kind] += 1
        signals = notification_signals(mutant.raw)
        if signals and reading.kind == "reply":
            read_as_reply.append(f"#{mutant.number} {mutant.source} {'+'.join(mutant.mutations)}: {', '.join(signals)}")

    acted = made[::ACT_EVERY]
    core = runtime.plugins.core("email")
    for mutant in acted:
        with core.session():
            handle_email(core, mutant.raw)
    with runtime.session() as session:
        # An opt-out and a delivery status are events of their own, beside the message that carried them.
        recorded = session.scalar(sa.select(sa.func.count()).select_from(InboundEvent).where(
            InboundEvent.kind.not_in(("opt_out", "status"))))
        huge = session.scalar(sa.select(sa.func.max(sa.func.length(InboundEvent.raw))))

    assert len(made) == MESSAGES and sum(kinds.values()) == MESSAGES
    assert recorded == len(acted) == MESSAGES // ACT_EVERY  # one event per message, whatever it said
    assert huge > 20 * 1024 * 1024  # the 20 MB attachments were acted on and kept
    assert read_as_reply == [], f"{len(read_as_reply)} notification(s) read as a reply:\n" + "\n".join(read_as_reply)
