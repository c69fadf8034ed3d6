"""read_message never raises and stays fast on hostile or huge input.

The bound below is generous (a shared CI core); what it catches is the catastrophic case: before
the scanned text was capped, 6 MB of "On ..." lines took minutes in a quoted-history regex.
"""
from __future__ import annotations

import os
import time
from email.message import EmailMessage

import pytest

from sequencer_email.reading import read_message

SECONDS = 10.0


def _reply_with(attachment: bytes, maintype: str, subtype: str) -> bytes:
    msg = EmailMessage()
    msg["From"] = "Lee Lead <lee@lead.example>"
    msg["Subject"] = "Re: Quick question"
    msg.set_content("Thanks, yes: call me on Friday.")
    msg.add_attachment(attachment, maintype=maintype, subtype=subtype, filename="big")
    return msg.as_bytes()


CASES = {
    "20 MB binary attachment": (_reply_with(os.urandom(20 * 1024 * 1024), "application", "octet-stream"), "reply"),
    "20 MB text attachment": (_reply_with(b"word " * 4_000_000, "text", "plain"), "reply"),
    "100 KB header": (b"From: lee@lead.example\r\nSubject: " + b"x" * 100_000 + b"\r\n\r\nhello\r\n", "reply"),
    "100 KB folded header": (b"From: lee@lead.example\r\nX-Long: " + b"y \r\n " * 30_000 + b"\r\n\r\nhello\r\n", "reply"),
    "one 1 MB line of addresses": (b"From: MAILER-DAEMON@mx.example\r\nSubject: Undeliverable\r\n\r\n" + b"a@" * 500_000, None),
    "6 MB of quote headers": (b"From: lee@lead.example\r\nSubject: Re: x\r\n\r\n" + (b"On " + b"x" * 290 + b"\n") * 20_000, "reply"),
    "boundary never closed": (b"From: lee@lead.example\r\nContent-Type: multipart/mixed; boundary=zz\r\n\r\n"
                              + b"--qqqqqqqqqq\r\n" * 200_000, None),
    "unknown charsets": (b"From: lee@lead.example\r\nSubject: =?x-bogus?B?AAAA?=\r\n"
                         b"Content-Type: text/plain; charset=x-nope\r\n\r\n\xff\xfe hello\r\n", "reply"),
    "bad base64 and transfer encoding": (b"From: lee@lead.example\r\nContent-Transfer-Encoding: base64\r\n\r\n!!!***\r\n", None),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_huge_or_broken_input_is_read_quickly(name: str) -> None:
    raw, kind = CASES[name]
    started = time.perf_counter()
    reading = read_message(raw)
    assert time.perf_counter() - started < SECONDS
    if kind:
        assert reading.kind == kind
    assert reading.kind != "reply" or not raw.startswith(b"From: MAILER-DAEMON")
