"""Report structure: RFC 3464 delivery-status parts, the returned message, Amazon SES notifications."""
from __future__ import annotations

import email
import email.message
import email.policy
import re
from dataclasses import dataclass

from sequencer_email.reading.decoding import _header, _message_ids, _part_text


@dataclass

class _Parts:
    plain: list[str]
    html: list[str]
    dsn: list[str]
    feedback: list[str]
    returned: list[email.message.Message]
    returned_headers: list[str]


_DSN_TYPES = frozenset({"message/delivery-status", "message/global-delivery-status"})


_RFC822_TYPES = frozenset({"message/rfc822", "message/global", "message/partial"})


_HEADERS_TYPES = frozenset({"text/rfc822-headers", "message/rfc822-headers", "text/rfc822-header", "message/global-headers"})


def _collect(part: email.message.Message, acc: _Parts) -> None:
    """Sort the leaves of a message by role, without descending into returned messages."""
    ctype = part.get_content_type()
    payload = part.get_payload()
    if ctype in _RFC822_TYPES:
        inner = payload[0] if isinstance(payload, list) and payload else None
        if inner is None and isinstance(payload, str):
            inner = email.message_from_string(_part_text(part) or payload, policy=email.policy.compat32)
        if inner is not None:
            acc.returned.append(inner)
    elif ctype in _DSN_TYPES:
        acc.dsn.append(_fields_text(part))
    elif ctype == "message/feedback-report":
        acc.feedback.append(_fields_text(part))
    elif part.is_multipart() and isinstance(payload, list):
        for sub in payload:
            _collect(sub, acc)
    elif part.get_content_maintype() == "multipart":
        # Declared multipart but no boundary ever appears: the body is one block of text.
        acc.plain.append(_part_text(part))
    elif ctype in _HEADERS_TYPES:
        acc.returned_headers.append(_part_text(part))
    elif ctype == "text/html":
        acc.html.append(_part_text(part))
    elif ctype.startswith("text/") or ctype == "application/json":
        if part.get_content_disposition() != "attachment" or not acc.plain:
            acc.plain.append(_part_text(part))


def _fields_text(part: email.message.Message) -> str:
    """Return a delivery-status or feedback-report part as field lines, blocks split by blank lines."""
    payload = part.get_payload()
    if isinstance(payload, list):
        return "\n\n".join(
            "\n".join(f"{k}: {_squash(str(v))}" for k, v in block.items()) for block in payload
        )
    return _part_text(part)


def _squash(text: str) -> str:
    """Collapse runs of whitespace to one space."""
    return re.sub(r"\s+", " ", text).strip()


def _field_blocks(text: str) -> list[dict[str, str]]:
    """Parse 'Name: value' blocks separated by blank lines (continuations joined)."""
    blocks: list[dict[str, str]] = []
    current: dict[str, str] = {}
    last = ""
    for line in text.splitlines():
        if not line.strip():
            if current:
                blocks.append(current)
            current, last = {}, ""
        elif line[:1] in " \t" and last:
            current[last] += " " + line.strip()
        elif ":" in line:
            name, _, value = line.partition(":")
            last = name.strip().lower()
            # Some servers omit the blank line between recipients: a repeated recipient field starts a new one.
            if last in current and last in ("final-recipient", "original-recipient"):
                blocks.append(current)
                current = {}
            current.setdefault(last, value.strip())
    if current:
        blocks.append(current)
    return blocks


# The human-readable part of a text bounce ends where the returned message starts.
_RETURNED_MARKER_RE = re.compile(
    r"^[ \t>]*[-=*_ ]*("
    r"below this line is a copy of the message|this is a copy of the message|"
    r"(the )?original message (follows|headers?|is (attached|below|included)|was (attached|included))|"
    r"original message -|original message\s*:?\s*$|"
    r"(un)?sent message follows|returned message|message headers follow|"
    r"headers of the original message|start of (the )?returned message|included is a copy|"
    r"copy of (the |your )?(original )?message|original message header|"
    r"the (header|headers) of the (original )?message|original mail header"
    r")",
    re.I | re.M,
)


_HEADER_LINE_RE = re.compile(r"^(Received|Return-Path|Message-ID|From|To|Subject|Date|MIME-Version|DKIM-Signature|X-[\w-]+):", re.I)


_DSN_FIELD_RE = re.compile(r"^(Final-Recipient|Original-Recipient|Action|Status|Diagnostic-Code|Remote-MTA|Reporting-MTA):", re.I | re.M)


def _split_returned(text: str) -> tuple[str, str]:
    """Split a text bounce into its explanation and the returned message that follows it."""
    marker = _RETURNED_MARKER_RE.search(text)
    lines = text.splitlines(keepends=True)
    offset = 0
    # A run of three header lines with a Received/Message-ID/Subject also starts the copy.
    for index, line in enumerate(lines):
        window = lines[index:index + 3]
        if len(window) == 3 and all(_HEADER_LINE_RE.match(w) or w[:1] in " \t" for w in window) and _HEADER_LINE_RE.match(line):
            if any(re.match(r"(Received|Message-ID|Subject|Return-Path):", w, re.I) for w in window):
                break
        offset += len(line)
    if marker and marker.start() < offset:
        offset = marker.start()
        rest = text[offset:].split("\n", 1)[1] if "\n" in text[offset:] else ""
        return text[:offset], rest.lstrip("\n")
    return text[:offset], text[offset:]


@dataclass

class _Failure:
    address: str
    action: str
    status: str
    diagnostic: str
    vendor_reason: str = ""  # the reporting MTA's own verdict, when its DSN carries one


def _unquote_forward(text: str, subject: str) -> str:
    """Remove one level of '>' quoting from a bounce a person forwarded to us."""
    if not re.match(r"\s*(fwd?|tr|wg|пересл)\s*:", subject, re.I):
        return text
    lines = re.sub(r"^> ?", "", text, flags=re.M).splitlines()
    start = next((i for i, line in enumerate(lines) if re.search(r"forwarded message|пересылаемое сообщение", line, re.I)), -1)
    if start < 0:
        return "\n".join(lines)
    # Drop the forwarded message's own header block so it is not taken for the returned copy.
    end = start + 1
    while end < len(lines) and (not lines[end].strip() or _HEADER_LINE_RE.match(lines[end]) or lines[end][:1] in " \t"):
        end += 1
    return "\n".join(lines[:start] + lines[end:])


def _returned_refs(parts: _Parts, returned_text: str) -> list[str]:
    """Return the Message-ID and In-Reply-To of the message a report returns to us."""
    headers = list(parts.returned)
    headers += [email.message_from_string(h, policy=email.policy.compat32) for h in parts.returned_headers]
    if returned_text:
        headers.append(email.message_from_string(returned_text.lstrip(), policy=email.policy.compat32))
    refs: list[str] = []
    for inner in headers:
        refs += _message_ids(_header(inner, "Message-ID")) + _message_ids(_header(inner, "In-Reply-To"))
    return refs
