"""SMTP sessions kept between send_batch calls, against real aiosmtpd servers on loopback."""
from __future__ import annotations

import asyncio
import gc
import ssl
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable

import pytest

from sequencer.mailsink import MailSink
from sequencer.testing.smtp import CountingHandler, smtp_server
from sequencer_email import EmailChannel
from sequencer_email import transport as transport_module
from sequencer_email.transport import resolve_transport, tls_context
from test_email_channel import make_channel, make_touch, prepared


@dataclass
class SessionHandler(CountingHandler):
    """Count RSETs and QUITs, keep each connection's server, note which connection carried each recipient.

    rset_reply answers RSET instead of 250; rcpt_replies answers RCPT for some recipients;
    data_seconds makes every message take that long, so that batches in two threads overlap.
    """

    rsets: int = 0
    quits: int = 0
    servers: list[Any] = field(default_factory=list)
    carried: list[tuple[str, int]] = field(default_factory=list)  # (recipient, client port)
    rset_reply: str | None = None
    rcpt_replies: dict[str, str] = field(default_factory=dict)
    data_seconds: float = 0.0

    async def handle_EHLO(self, server, session, envelope, hostname, responses):  # noqa: ANN001 - aiosmtpd API
        self.servers.append(server)
        return await super().handle_EHLO(server, session, envelope, hostname, responses)

    async def handle_RSET(self, server, session, envelope):  # noqa: ANN001
        self.rsets += 1
        return self.rset_reply or "250 OK"

    async def handle_QUIT(self, server, session, envelope):  # noqa: ANN001
        self.quits += 1
        return "221 Bye"

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):  # noqa: ANN001
        if address in self.rcpt_replies:
            return self.rcpt_replies[address]
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):  # noqa: ANN001
        self.carried.extend((rcpt, session.peer[1]) for rcpt in envelope.rcpt_tos)
        await asyncio.sleep(self.data_seconds)
        return await super().handle_DATA(server, session, envelope)


def drop_connection(sink: MailSink, server: Any) -> None:
    """Hang up one connection from the server's side, as a server whose idle timeout passed does."""
    done = threading.Event()

    def abort() -> None:
        server.transport.abort()
        # The socket closes on the loop's next turn; done is set after it.
        sink.controller.loop.call_soon(done.set)

    sink.controller.loop.call_soon_threadsafe(abort)
    assert done.wait(5)


def wait_for(condition: Callable[[], bool], seconds: float = 5.0) -> bool:
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


def idle_sessions(channel: EmailChannel) -> int:
    return channel.sessions.idle(resolve_transport(channel.context.settings))


def recipients(sink: MailSink) -> list[str]:
    return [rcpt for mail in sink.received for rcpt in mail.rcpt_tos]


def test_two_batches_share_one_connection_checked_with_rset() -> None:
    handler = SessionHandler()
    with smtp_server(handler) as sink:
        channel = make_channel(sink.port)
        first = channel.send_batch(prepared(channel, make_touch(1), make_touch(2)))
        second = channel.send_batch(prepared(channel, make_touch(3)))
        assert handler.connections == 1 and handler.rsets == 1 and handler.quits == 0
        assert idle_sessions(channel) == 1
        channel.sessions.close()
        assert handler.quits == 1 and idle_sessions(channel) == 0
    assert all(result.accepted for result in first + second)
    assert recipients(sink) == ["lead1@example.org", "lead2@example.org", "lead3@example.org"]


def test_idle_connection_dropped_by_the_server_is_replaced_before_any_message() -> None:
    handler = SessionHandler()
    with smtp_server(handler) as sink:
        channel = make_channel(sink.port)
        [first] = channel.send_batch(prepared(channel, make_touch(1)))
        drop_connection(sink, handler.servers[0])
        [second] = channel.send_batch(prepared(channel, make_touch(2)))
        channel.sessions.close()
    # The dead session failed its RSET, so the message went once, on a new connection, without a lost attempt.
    assert first.accepted and second.accepted
    assert handler.connections == 2
    assert recipients(sink) == ["lead1@example.org", "lead2@example.org"]
    assert [port for _rcpt, port in handler.carried][0] != [port for _rcpt, port in handler.carried][1]


def test_idle_session_answering_rset_with_421_is_replaced() -> None:
    handler = SessionHandler()
    with smtp_server(handler) as sink:
        channel = make_channel(sink.port)
        channel.send_batch(prepared(channel, make_touch(1)))
        handler.rset_reply = "421 4.3.2 Service shutting down"
        [second] = channel.send_batch(prepared(channel, make_touch(2)))
        channel.sessions.close()
    assert second.accepted
    assert handler.connections == 2
    assert recipients(sink) == ["lead1@example.org", "lead2@example.org"]


def test_421_during_a_batch_discards_the_session() -> None:
    handler = SessionHandler(rcpt_replies={"lead1@example.org": "421 4.3.2 Service shutting down"})
    with smtp_server(handler) as sink:
        channel = make_channel(sink.port)
        [refused] = channel.send_batch(prepared(channel, make_touch(1)))
        assert idle_sessions(channel) == 0
        [accepted] = channel.send_batch(prepared(channel, make_touch(2)))
        channel.sessions.close()
    assert not refused.accepted and refused.retryable
    assert accepted.accepted
    # The server said it was closing: that session was never asked anything again, not even RSET.
    assert handler.connections == 2 and handler.rsets == 0
    assert recipients(sink) == ["lead2@example.org"]


def test_keepalive_zero_opens_one_connection_per_call() -> None:
    handler = SessionHandler()
    with smtp_server(handler) as sink:
        channel = make_channel(sink.port, keepalive_seconds=0)
        results = [channel.send_batch(prepared(channel, make_touch(n)))[0] for n in (1, 2)]
        assert idle_sessions(channel) == 0
    assert all(result.accepted for result in results)
    assert handler.connections == 2 and handler.quits == 2 and handler.rsets == 0


def test_idle_session_is_quit_when_its_keepalive_passes() -> None:
    handler = SessionHandler()
    with smtp_server(handler) as sink:
        channel = make_channel(sink.port, keepalive_seconds=0.3)
        channel.send_batch(prepared(channel, make_touch(1)))
        assert idle_sessions(channel) == 1 and handler.quits == 0
        assert wait_for(lambda: handler.quits == 1)
        assert idle_sessions(channel) == 0
        [later] = channel.send_batch(prepared(channel, make_touch(2)))
        channel.sessions.close()
    assert later.accepted and handler.connections == 2


def test_sessions_are_quit_when_the_channel_goes_away() -> None:
    handler = SessionHandler()
    with smtp_server(handler) as sink:
        channel = make_channel(sink.port)
        channel.send_batch(prepared(channel, make_touch(1)))
        del channel
        gc.collect()
        assert handler.quits == 1


def test_a_session_in_use_is_never_handed_to_another_caller() -> None:
    handler = SessionHandler()
    with smtp_server(handler) as sink:
        channel = make_channel(sink.port)
        transport = resolve_transport(channel.context.settings)
        held = channel.sessions.acquire(transport)
        other = channel.sessions.acquire(transport)
        assert other is not held and handler.connections == 2
        channel.sessions.release(transport, held, keepalive=30, reusable=True)
        assert channel.sessions.acquire(transport) is held
        for smtp in (held, other):
            channel.sessions.release(transport, smtp, keepalive=30, reusable=True)
        channel.sessions.close()
        assert handler.quits == 2


def test_batches_in_two_threads_each_use_their_own_session() -> None:
    handler = SessionHandler(data_seconds=0.2)
    with smtp_server(handler) as sink:
        channel = make_channel(sink.port)

        def run(round_: int) -> None:
            start = threading.Barrier(2)
            results: dict[str, list[Any]] = {}

            def send(name: str, numbers: tuple[int, int]) -> None:
                touches = prepared(channel, *(make_touch(n) for n in numbers))
                start.wait()
                results[name] = channel.send_batch(touches)

            base = round_ * 10
            threads = [threading.Thread(target=send, args=(name, (base + first, base + first + 1)))
                       for name, first in (("a", 1), ("b", 3))]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join(10)
            assert sorted(results) == ["a", "b"]
            assert all(result.accepted for batch in results.values() for result in batch)

        run(0)
        assert handler.connections == 2
        run(1)
        # Both sessions came back and were taken again: no third connection for the second round.
        assert handler.connections == 2 and idle_sessions(channel) == 2
        channel.sessions.close()
    assert len(sink.received) == 8
    # Every connection carried only one thread's messages of a round: no session was used by both at once.
    by_port: dict[tuple[int, int], set[int]] = {}
    for rcpt, port in handler.carried:
        number = int(rcpt.removeprefix("lead").partition("@")[0])
        by_port.setdefault((number // 10, port), set()).add(number % 10)
    assert sorted(map(sorted, by_port.values())) == [[1, 2], [1, 2], [3, 4], [3, 4]]


def test_tls_context_is_built_only_for_tls_and_once_per_transport(monkeypatch: pytest.MonkeyPatch) -> None:
    built: list[ssl.SSLContext] = []

    def create_default_context() -> ssl.SSLContext:
        built.append(ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT))
        return built[-1]

    monkeypatch.setattr(transport_module.ssl, "create_default_context", create_default_context)
    tls_context.cache_clear()
    handler = SessionHandler()
    with smtp_server(handler) as sink:
        channel = make_channel(sink.port, keepalive_seconds=0)
        [result] = channel.send_batch(prepared(channel, make_touch(1)))
    assert result.accepted and built == []
    starttls = resolve_transport({"host": "127.0.0.1", "security": "starttls"})
    assert tls_context(starttls) is tls_context(starttls) and len(built) == 1
    tls_context.cache_clear()


@pytest.mark.parametrize("value", [-1, "soon"])
def test_unusable_keepalive_is_named_and_sends_nothing(value: object) -> None:
    handler = SessionHandler()
    with smtp_server(handler) as sink:
        channel = make_channel(sink.port, keepalive_seconds=value)
        assert "[plugins.email] keepalive_seconds" in channel.unavailable_reason()
        [result] = channel.send_batch(prepared(channel, make_touch(1)))
    assert not result.accepted and result.retryable and "keepalive_seconds" in result.error
    assert handler.connections == 0 and sink.received == []
