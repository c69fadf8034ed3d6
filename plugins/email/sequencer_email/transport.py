"""SMTP transport settings, connections kept between batches, and one message's delivery classified by what the
server surely saw."""
from __future__ import annotations

import functools
import re
import smtplib
import ssl
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Literal, Mapping

SECURITY_MODES = ("starttls", "ssl", "none")
DEFAULT_PORTS = {"starttls": 587, "ssl": 465, "none": 25}
DEFAULT_TIMEOUT = 30.0
# Long enough to carry a session from one max_in_flight group to the next, well under the 5 minutes
# a server waits for a command before it may close an idle connection (RFC 5321 4.5.3.2.7).
DEFAULT_KEEPALIVE = 30.0
# A QUIT to a server that stopped answering must not hold up a worker that is stopping.
QUIT_TIMEOUT = 5.0
TRANSPORT_KEYS = ("host", "port", "security", "username", "password", "timeout", "message_id_domain")


class TransportError(ValueError):
    """A transport setting that cannot be used; the message names the key."""


@dataclass(frozen=True)
class Transport:
    """Where and how to reach one SMTP server, as one mailbox sees it."""

    host: str
    port: int
    security: str = "starttls"
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    timeout: float = DEFAULT_TIMEOUT
    message_id_domain: str | None = None

    @property
    def key(self) -> tuple[str, int, str, str | None]:
        """Return what identifies one SMTP connection: touches with the same key share it."""
        return (self.host, self.port, self.security, self.username)

    @property
    def label(self) -> str:
        """Return host:port, for messages."""
        return f"{self.host}:{self.port}"


def resolve_transport(shared: Mapping[str, Any], override: Mapping[str, Any] | None = None) -> Transport:
    """Return the effective transport: the [plugins.email] settings with a mailbox's own keys on top."""
    values = {k: v for k, v in shared.items() if k in TRANSPORT_KEYS and v not in (None, "")}
    values.update({k: v for k, v in (override or {}).items() if k in TRANSPORT_KEYS and v not in (None, "")})
    host = str(values.get("host", "")).strip()
    if not host:
        raise TransportError("no SMTP host configured: set [plugins.email] host in config.toml "
                             "(or host in the mailbox's transport)")
    security = str(values.get("security", "starttls")).lower()
    if security not in SECURITY_MODES:
        raise TransportError(f"[plugins.email] security must be one of {', '.join(SECURITY_MODES)}, not {security!r}")
    return Transport(
        host=host,
        port=_number(values, "port", int, DEFAULT_PORTS[security]),
        security=security,
        username=values.get("username"),
        password=values.get("password"),
        timeout=_number(values, "timeout", float, DEFAULT_TIMEOUT),
        message_id_domain=values.get("message_id_domain"),
    )


def resolve_keepalive(shared: Mapping[str, Any]) -> float:
    """Return [plugins.email] keepalive_seconds: how long an idle SMTP session waits for the next batch (0: never)."""
    return _number(shared, "keepalive_seconds", float, DEFAULT_KEEPALIVE, zero_allowed=True)


def _number(values: Mapping[str, Any], key: str, kind: type[int] | type[float], default: int | float,
            zero_allowed: bool = False) -> Any:
    """Return values[key] as a positive number (or zero when allowed), or default when absent."""
    raw = values.get(key)
    if raw is None or raw == "":
        raw = default
    try:
        number = kind(raw)
    except (TypeError, ValueError):
        raise TransportError(f"[plugins.email] {key} must be a number, not {raw!r}") from None
    if number < 0 or (number == 0 and not zero_allowed):
        raise TransportError(f"[plugins.email] {key} must be {'zero or more' if zero_allowed else 'positive'}, "
                             f"not {raw!r}")
    return number


class SessionRefused(smtplib.SMTPResponseException):
    """The server refused the session itself; stage says where: greeting, EHLO, STARTTLS or AUTH."""

    def __init__(self, stage: str, code: int, reply: bytes | str) -> None:
        super().__init__(code, reply)
        self.stage = stage

    @property
    def reply(self) -> str:
        """Return the server's text, without the code."""
        return _text(self.smtp_error) if isinstance(self.smtp_error, bytes) else str(self.smtp_error)


def connect(transport: Transport, timeout: float | None = None) -> smtplib.SMTP:
    """Open an SMTP session: EHLO, STARTTLS and login as configured; raise OSError on failure.

    A refusal by the server (a reply code) is raised as SessionRefused, naming the step.
    """
    timeout = timeout or transport.timeout
    try:
        if transport.security == "ssl":
            smtp: smtplib.SMTP = smtplib.SMTP_SSL(transport.host, transport.port, timeout=timeout,
                                                  context=tls_context(transport))
        else:
            smtp = smtplib.SMTP(transport.host, transport.port, timeout=timeout)
    except smtplib.SMTPResponseException as exc:
        raise SessionRefused("greeting", exc.smtp_code, exc.smtp_error) from None
    stage = "EHLO"
    try:
        _hello(smtp)
        if transport.security == "starttls":
            # starttls() raises when the server does not offer it: never fall back to plain text.
            stage = "STARTTLS"
            smtp.starttls(context=tls_context(transport))
            stage = "EHLO"
            _hello(smtp)
        if transport.username:
            stage = "AUTH"
            smtp.login(transport.username, transport.password or "")
    except smtplib.SMTPResponseException as exc:
        smtp.close()
        raise SessionRefused(stage, exc.smtp_code, exc.smtp_error) from None
    except BaseException:
        smtp.close()
        raise
    return smtp


@functools.lru_cache(maxsize=64)
def tls_context(transport: Transport) -> ssl.SSLContext:
    """Return the transport's TLS context, built the first time it is needed (it reads the CA store: ~20 ms)."""
    return ssl.create_default_context()


def _hello(smtp: smtplib.SMTP) -> None:
    """Say EHLO (HELO to a server that does not know EHLO); raise when the server refuses us."""
    code, reply = smtp.ehlo()
    if code in (500, 502):  # command unrecognized or not implemented: RFC 5321 3.2 allows falling back
        code, reply = smtp.helo()
    if not _is_2xx(code):
        raise smtplib.SMTPHeloError(code, reply)


def disconnect(smtp: smtplib.SMTP, timeout: float | None = None) -> None:
    """Say QUIT when the server still listens (waiting at most timeout when given), and close the socket in every case."""
    try:
        if timeout is not None and smtp.sock is not None:
            smtp.sock.settimeout(timeout)
        smtp.quit()
    except OSError:
        pass
    finally:
        smtp.close()


class Sessions:
    """Logged-in SMTP sessions kept open between batches, each lent to one thread at a time.

    `worker --concurrency N` runs N engines in threads on one channel, and an smtplib.SMTP is
    not safe to share: acquire() takes a session out of the pool and release() puts it back,
    so two threads never hold the same one. An idle session is checked with RSET before it is
    used again, which is before any MAIL FROM: one that does not answer is dropped and a new
    one opened, and no message is ever sent twice because of it. A timer QUITs the sessions
    that stayed idle past their keepalive; close() QUITs the rest.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        # Per transport, (deadline, session) in the order they came back: the newest is taken first.
        self._idle: dict[Transport, list[tuple[float, smtplib.SMTP]]] = {}
        self._timer: threading.Timer | None = None
        self._closed = False

    def acquire(self, transport: Transport) -> smtplib.SMTP:
        """Return an idle session of this transport that still answers, or a new one (see connect())."""
        while (smtp := self._take(transport)) is not None:
            if _answers(smtp):
                return smtp
            smtp.close()
        return connect(transport)

    def release(self, transport: Transport, smtp: smtplib.SMTP, *, keepalive: float, reusable: bool) -> None:
        """Give a session back: kept for keepalive seconds when reusable, else closed now.

        reusable is False after anything that leaves the session in doubt (a broken connection,
        a 421, an exception in the middle of a message): such a session is closed without QUIT.
        """
        if not reusable:
            smtp.close()
            return
        with self._lock:
            keep = keepalive > 0 and not self._closed
            if keep:
                self._idle.setdefault(transport, []).append((time.monotonic() + keepalive, smtp))
                self._schedule()
        if not keep:
            disconnect(smtp)

    def idle(self, transport: Transport) -> int:
        """Return how many sessions of this transport wait for a batch."""
        with self._lock:
            return len(self._idle.get(transport, ()))

    def close(self) -> None:
        """QUIT every idle session and keep none from now on (the channel is going away or the process ends)."""
        with self._lock:
            self._closed = True
            sessions = [smtp for kept in self._idle.values() for _deadline, smtp in kept]
            self._idle.clear()
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None
        for smtp in sessions:
            disconnect(smtp, QUIT_TIMEOUT)

    def _take(self, transport: Transport) -> smtplib.SMTP | None:
        """Take the newest idle session of this transport still inside its keepalive, QUITting older expired ones."""
        expired: list[smtplib.SMTP] = []
        taken = None
        with self._lock:
            kept = self._idle.get(transport, [])
            now = time.monotonic()
            while kept and taken is None:
                deadline, smtp = kept.pop()
                if deadline > now:
                    taken = smtp
                else:
                    expired.append(smtp)
        for smtp in expired:
            disconnect(smtp, QUIT_TIMEOUT)
        return taken

    def _schedule(self) -> None:
        """Start the timer for the earliest deadline, unless one runs already (call with the lock held)."""
        deadlines = [deadline for kept in self._idle.values() for deadline, _smtp in kept]
        if self._timer is not None or not deadlines:
            return
        self._timer = threading.Timer(max(min(deadlines) - time.monotonic(), 0.0), self._expire)
        self._timer.daemon = True  # never keeps a stopping worker alive; close() QUITs at exit
        self._timer.start()

    def _expire(self) -> None:
        """QUIT the sessions whose keepalive has passed, and wait for the next deadline."""
        expired: list[smtplib.SMTP] = []
        with self._lock:
            self._timer = None
            now = time.monotonic()
            for transport, kept in list(self._idle.items()):
                expired.extend(smtp for deadline, smtp in kept if deadline <= now)
                kept[:] = [(deadline, smtp) for deadline, smtp in kept if deadline > now]
                if not kept:
                    del self._idle[transport]
            self._schedule()
        for smtp in expired:
            disconnect(smtp, QUIT_TIMEOUT)


def _answers(smtp: smtplib.SMTP) -> bool:
    """Tell whether an idle session still answers RSET with 250 (a 421 or a dropped connection does not)."""
    try:
        code, _reply = smtp.rset()
    except OSError:
        return False
    return code == 250


Outcome = Literal["accepted", "refused", "lost", "unknown"]


@dataclass(frozen=True)
class Delivery:
    """What happened to one message.

    accepted: the server replied 2xx to the message data.
    refused:  the server replied 4xx/5xx (code and reply say which command and why).
    lost:     the connection broke before the message was complete: the server surely does not have it.
    unknown:  the connection broke, or the reply was unreadable, after the whole message was sent.
    """

    outcome: Outcome
    stage: str  # MAIL, RCPT, DATA (the command) or message (the data and its final reply)
    code: int | None = None
    reply: str = ""
    connection_ok: bool = True

    @property
    def status(self) -> str:
        """Return the server's reply as "code text", or the error when there was no reply."""
        return f"{self.code} {self.reply}".strip() if self.code is not None else self.reply

    @property
    def enhanced_status(self) -> str | None:
        """Return the RFC 3463 enhanced status code at the start of the reply (e.g. "5.1.1"), if any."""
        return enhanced_status(self.reply)


def enhanced_status(reply: str) -> str | None:
    """Return the RFC 3463 enhanced status code (class.subject.detail) a reply text starts with, if any."""
    match = re.match(r"\s*([245]\.\d{1,3}\.\d{1,3})(?!\d)", reply)
    return match.group(1) if match else None


def deliver(smtp: smtplib.SMTP, mail_from: str, rcpt_to: str, data: bytes) -> Delivery:
    """Send one message on an open session with MAIL, RCPT and DATA, and say what the server surely has."""
    commands = (("MAIL", f"MAIL FROM:<{mail_from}>", 250), ("RCPT", f"RCPT TO:<{rcpt_to}>", 250), ("DATA", "DATA", 354))
    for stage, command, expected in commands:
        try:
            code, reply = smtp.docmd(command)
        except OSError as exc:
            return Delivery("lost", stage, reply=str(exc), connection_ok=False)
        # 251 (user not local, will forward) is a success for RCPT too.
        if code != expected and not (expected == 250 and _is_2xx(code)):
            return _refused(smtp, stage, code, reply)
    try:
        smtp.send(_dot_stuffed(data))
    except OSError as exc:
        # The terminating "." is the last thing written; a write that failed never delivered it,
        # and a server only accepts a message once it has seen it.
        return Delivery("lost", "message", reply=str(exc), connection_ok=False)
    try:
        code, reply = smtp.getreply()
    except OSError as exc:
        return Delivery("unknown", "message", reply=str(exc), connection_ok=False)
    if _is_2xx(code):
        return Delivery("accepted", "message", code, _text(reply))
    if code < 400:  # -1 (unreadable) or a code no server sends here: we cannot tell
        return Delivery("unknown", "message", code, _text(reply), connection_ok=False)
    return _refused(smtp, "message", code, reply)


def _refused(smtp: smtplib.SMTP, stage: str, code: int, reply: bytes) -> Delivery:
    """Record a refusal and reset the session so the next message can use it."""
    connection_ok = code != 421  # 421: the server is closing the connection
    if connection_ok:
        try:
            smtp.rset()
        except OSError:
            connection_ok = False
    return Delivery("refused", stage, code, _text(reply), connection_ok)


def _is_2xx(code: int) -> bool:
    return 200 <= code < 300


def _text(reply: bytes) -> str:
    return reply.decode("utf-8", "replace").replace("\n", " ")


def _dot_stuffed(data: bytes) -> bytes:
    """Return the DATA payload: leading dots doubled (RFC 5321 4.5.2), ended by CRLF.CRLF."""
    data = re.sub(rb"(?m)^\.", b"..", data)
    if not data.endswith(b"\r\n"):
        data += b"\r\n"
    return data + b".\r\n"


def describe_error(exc: OSError) -> str:
    """Return an SMTP or socket error as one readable line."""
    if isinstance(exc, smtplib.SMTPResponseException):
        return f"{exc.smtp_code} {_text(exc.smtp_error) if isinstance(exc.smtp_error, bytes) else exc.smtp_error}"
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
