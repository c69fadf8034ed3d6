"""SMTP servers for tests: an aiosmtpd sink on loopback that counts sessions, and a port nothing listens on."""
from __future__ import annotations

import socket
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Iterator

from aiosmtpd.controller import Controller

from sequencer.mailsink import MailSink, SinkHandler


@dataclass
class CountingHandler(SinkHandler):
    """A sink that counts SMTP sessions (one EHLO each)."""

    connections: int = 0

    async def handle_EHLO(self, server, session, envelope, hostname, responses):  # noqa: ANN001 - aiosmtpd API
        self.connections += 1
        session.host_name = hostname
        return responses


@contextmanager
def smtp_server(handler: SinkHandler, **controller_options: Any) -> Iterator[MailSink]:
    """Run handler on a loopback port, with extra aiosmtpd options (authentication) when given."""
    sink = MailSink(handler=handler)
    if controller_options:
        sink.controller.loop.close()  # the default controller never started; replace it
        sink.controller = Controller(handler, hostname=sink.host, port=sink.port, decode_data=False, **controller_options)
    with sink:
        yield sink


def closed_port() -> int:
    """Return a loopback port nothing listens on."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
