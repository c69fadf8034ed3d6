"""A local SMTP server (aiosmtpd) that keeps every message: the demo's outbox and the tests' inbox."""
from __future__ import annotations

import email
import email.policy
import threading
from dataclasses import dataclass, field
from email.message import EmailMessage
from pathlib import Path

from aiosmtpd.controller import Controller


@dataclass
class ReceivedMail:
    mail_from: str
    rcpt_tos: list[str]
    data: bytes

    @property
    def message(self) -> EmailMessage:
        return email.message_from_bytes(self.data, policy=email.policy.default)  # type: ignore[return-value]


@dataclass
class SinkHandler:
    """Collect messages in memory and, given a folder, write each one as NNNNNN.eml."""

    outbox: Path | None = None
    received: list[ReceivedMail] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    async def handle_DATA(self, server, session, envelope) -> str:  # noqa: ANN001 - aiosmtpd API
        mail = ReceivedMail(envelope.mail_from, list(envelope.rcpt_tos), bytes(envelope.original_content or envelope.content))
        with self._lock:
            self.received.append(mail)
            number = len(self.received)
        if self.outbox is not None:
            self.outbox.mkdir(parents=True, exist_ok=True)
            (self.outbox / f"{number:06d}.eml").write_bytes(mail.data)
        return "250 OK message accepted"

    def messages(self) -> list[EmailMessage]:
        with self._lock:
            return [m.message for m in self.received]


class MailSink:
    """Run an SMTP sink on a loopback port in a background thread."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0, outbox: Path | None = None,
                 handler: SinkHandler | None = None) -> None:
        self.handler = handler or SinkHandler(outbox=outbox)
        if port == 0:
            from socket import socket

            with socket() as s:
                s.bind((host, 0))
                port = s.getsockname()[1]
        self.host, self.port = host, port
        self.controller = Controller(self.handler, hostname=host, port=port, decode_data=False)

    def __enter__(self) -> "MailSink":
        self.controller.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.controller.stop()

    @property
    def received(self) -> list[ReceivedMail]:
        return self.handler.received

    def messages(self) -> list[EmailMessage]:
        return self.handler.messages()
