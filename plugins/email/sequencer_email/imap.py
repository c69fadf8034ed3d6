"""IMAP polling: read each new message of a mailbox's folder once and hand it to the inbound rules.

Runs as the plugin's `poll_inbound` job (register_jobs) and `sequencer inbound poll`. Where the
poller got to is the pair (UIDVALIDITY, last UID) in the mailbox's sender state, kept by the
core (Core.sender_state: epoch and position). Every message is handled and the last UID
advanced in one transaction, under a lock on the mailbox's state, so a crash between messages never reads a handled one again and two
workers never both act on one message. Messages are fetched with BODY.PEEK and the
folder is opened read-only (EXAMINE), so nothing on the server changes unless the
mailbox is configured to mark messages seen or move them.
"""
from __future__ import annotations

import imaplib
import ipaddress
import logging
import os
import re
import ssl
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sequencer.channels import CoreUnavailable
from sequencer_email.inbound import CHANNEL, act_once, message_id_of

if TYPE_CHECKING:
    from sequencer.channels import Core

log = logging.getLogger(__name__)

SECURITY = ("ssl", "starttls", "none")
DEFAULT_PORTS = {"ssl": 993, "starttls": 143, "none": 143}
BACKOFF_FIRST = timedelta(minutes=1)
BACKOFF_MAX = timedelta(hours=1)
TIMEOUT_SECONDS = 30.0
# A poll handles at most this many messages; the rest wait for the next poll, so one huge
# folder cannot keep the job busy for hours.
MAX_PER_POLL = 500
# Keys that say which folder on which server the stored UIDs belong to.
_POSITION_KEYS = ("host", "port", "username", "folder")


class InboundSettingsError(ValueError):
    """IMAP settings that cannot work; the message names the option and the fix."""


class PollFailed(Exception):
    """The server could not be reached, logged into or read; the message says which and why."""


@dataclass
class PollResult:
    fetched: int = 0
    errors: list[str] = field(default_factory=list)
    mailbox: str = ""
    # Messages already recorded (same Message-ID), passed over without acting again.
    skipped: int = 0
    messages: list[dict[str, Any]] = field(default_factory=list)


def configure_inbound(core: Core, address: str, *, host: str, username: str, port: int | None = None,
                      security: str = "ssl", password: str | None = None, password_env: str | None = None,
                      folder: str = "INBOX", mark_seen: bool = False, move_to: str | None = None,
                      ca_file: str | None = None, skip_existing: bool = False) -> dict[str, Any]:
    """Store a mailbox's IMAP settings and return them; a different server, user or folder starts reading afresh.

    Raises LookupError for an address that is none of our mailboxes.
    """
    mailbox = core.find_sender(CHANNEL, address)
    host, username, folder = host.strip(), username.strip(), (folder or "").strip() or "INBOX"
    if not host:
        raise InboundSettingsError("--host is empty; give the IMAP server's name, like imap.example.com")
    if not username:
        raise InboundSettingsError("--username is empty; give the login of the mailbox on the IMAP server")
    if security not in SECURITY:
        raise InboundSettingsError(f"security '{security}' is unknown; use one of {', '.join(SECURITY)}")
    if security == "none" and not _is_loopback(host):
        raise InboundSettingsError(f"security 'none' would send the password to {host} unencrypted; use ssl or "
                                   "starttls ('none' is only for a server on this machine)")
    if (password is None) == (password_env is None):
        raise InboundSettingsError("give exactly one of --password-env VAR (preferred) or --password-stdin")
    if password_env is not None and not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", password_env):
        raise InboundSettingsError(f"--password-env '{password_env}' is not an environment variable name")
    if password is not None and not password:
        raise InboundSettingsError("the password read from standard input is empty")
    if move_to is not None and move_to.strip() in ("", folder):
        raise InboundSettingsError(f"--move-to must name another folder than {folder}, like Processed")
    if ca_file is not None and not Path(ca_file).is_file():
        raise InboundSettingsError(f"--ca-file {ca_file}: no such file; give a PEM file of the CA to trust")
    port = port or DEFAULT_PORTS[security]
    if not 0 < port < 65536:
        raise InboundSettingsError(f"--port {port} is not a TCP port")
    settings: dict[str, Any] = {"host": host, "port": port, "security": security, "username": username,
                                "folder": folder, "mark_seen": mark_seen}
    if password_env is not None:
        settings["password_env"] = password_env
    else:
        settings["password"] = password
    for key, value in (("move_to", move_to and move_to.strip()), ("ca_file", ca_file),
                       ("skip_existing", skip_existing or None)):
        if value:
            settings[key] = value
    state: dict[str, Any] = {}
    if any(mailbox.settings.get(k) != settings[k] for k in _POSITION_KEYS):
        # UIDs belong to one folder on one server: elsewhere, reading starts from the beginning.
        state.update(epoch=None, position=None, checked_at=None)
    # New settings deserve an immediate try, whatever failed before.
    core.save_sender_state(mailbox.sender_id, settings=settings, error=None, failures=0, retry_at=None, **state,
                           audit_detail=describe_settings(settings))
    return settings


def describe_settings(settings: dict[str, Any]) -> dict[str, Any]:
    """Return the settings fit to show or audit: the password itself never appears."""
    shown = {k: v for k, v in settings.items() if k != "password"}
    if "password" in settings:
        shown["password"] = "stored"
    return shown


def poll_inbound(core: Core, *, include_waiting: bool = False) -> list[PollResult]:
    """Poll every mailbox with IMAP settings whose retry time has come (the worker's `poll_inbound` job).

    `include_waiting` also polls mailboxes backing off after a failure (an operator asking now).
    """
    now = core.now()
    due = [sender.sender_id for sender in core.senders(CHANNEL)
           if sender.settings and (include_waiting or sender.retry_at is None or sender.retry_at <= now)]
    results = []
    for mailbox_id in due:
        try:
            results.append(poll_mailbox(core, mailbox_id))
        except Exception as exc:  # one broken mailbox must not stop the others
            log.exception("polling mailbox %s failed", mailbox_id)
            results.append(PollResult(errors=[f"mailbox {mailbox_id}: {type(exc).__name__}: {exc}"]))
    return results


def poll_mailbox(core: Core, mailbox_id: int) -> PollResult:
    """Connect, read the messages that arrived since the last poll, act on each once, and record health."""
    mailbox = core.sender_state(mailbox_id)
    result = PollResult(mailbox=mailbox.address)
    settings = dict(mailbox.settings)
    if not settings:
        result.errors.append(f"mailbox {result.mailbox} has no IMAP settings; set them with "
                             f"`sequencer mailboxes inbound {result.mailbox} --host ...`")
        return result
    warnings: list[str] = []
    try:
        conn = _open(settings)
        try:
            validity = _select(conn, settings)
            _read_new(core, mailbox_id, conn, settings, validity, result, warnings)
        finally:
            _close(conn)
    except PollFailed as exc:
        _record_failure(core, mailbox_id, str(exc))
        result.errors.append(str(exc))
        log.warning("mailbox %s: %s", result.mailbox, exc)
        return result
    except (imaplib.IMAP4.error, OSError) as exc:
        # The connection broke after login: what was handled is committed; the rest waits.
        message = f"reading {settings.get('folder', 'INBOX')} on {_where(settings)} failed: {_text(exc)}"
        _record_failure(core, mailbox_id, message)
        result.errors.append(message)
        log.warning("mailbox %s: %s", result.mailbox, message)
        return result
    _record_success(core, mailbox_id, validity, "; ".join(warnings) or None)
    result.errors += warnings
    log.info("mailbox %s: %d message(s) handled, %d already recorded", result.mailbox, result.fetched,
             result.skipped)
    return result


def _read_new(core: Core, mailbox_id: int, conn: imaplib.IMAP4, settings: dict[str, Any], validity: int,
              result: PollResult, warnings: list[str]) -> None:
    mailbox = core.sender_state(mailbox_id)
    stored_validity, last_uid = mailbox.epoch, mailbox.position or 0
    if stored_validity != validity:
        # First poll, or the server renumbered the folder: old UIDs mean nothing now. Messages
        # already acted on are recognised by their Message-ID below.
        last_uid = 0
    uids = _search(conn, last_uid + 1)
    if stored_validity is None and settings.get("skip_existing"):
        _advance(core, mailbox_id, validity, max(uids, default=0))
        return
    for uid in uids[:MAX_PER_POLL]:
        raw = _fetch(conn, uid)
        try:
            with core.session():
                # The lock makes concurrent pollers of one mailbox take turns; the loser sees the UID done.
                mailbox = core.sender_state(mailbox_id, lock=True)
                done = (mailbox.position or 0) if mailbox.epoch == validity else 0
                if uid <= done:
                    continue
                if raw is None:
                    row = {"uid": uid, "kind": None, "note": "gone from the server before it was read"}
                else:
                    # Never raises for what the message says: one that cannot be acted on is recorded as such.
                    handled = act_once(core, raw)
                    row = {"uid": uid, "kind": handled.kind, "lead_id": handled.lead_id,
                           "message_id": message_id_of(raw), "actions": handled.actions}
                    if handled.duplicate:
                        result.skipped += 1
                        row["note"] = "already recorded; not acted on again"
                    else:
                        result.fetched += 1
                    if handled.unmatched:
                        row["unmatched"] = handled.unmatched
                core.save_sender_state(mailbox_id, epoch=validity, position=uid)
        except Exception as exc:
            folder = settings.get("folder", "INBOX")
            if isinstance(exc, CoreUnavailable):
                # Nothing was committed: the UID stays unread and the poll is tried again after a backoff.
                log.warning("mailbox %s: message UID %s could not be handled: %s", result.mailbox, uid, exc)
                cause = exc.__cause__ or exc  # the database's own error, which CoreUnavailable wraps
                why = f"{type(cause).__name__}: {getattr(cause, 'orig', cause)}"
                raise PollFailed(f"message UID {uid} in {folder} could not be handled ({why}); "
                                 "it will be tried again") from exc
            # Even recording failed, and would fail again: pass the message over so the mail behind it is read.
            log.exception("mailbox %s: message UID %s could not be recorded", result.mailbox, uid)
            _advance(core, mailbox_id, validity, uid)
            problem = (f"message UID {uid} in {folder} could not be recorded ({type(exc).__name__}: {exc}); "
                       "passed over, read it on the server")
            warnings.append(problem)
            row = {"uid": uid, "kind": None, "note": problem}
        result.messages.append(row)
        if raw is not None:
            problem = _dispose(conn, uid, settings)
            if problem:
                warnings.append(problem)


def check_login(settings: dict[str, Any], *, timeout: float) -> str:
    """Connect, log in and open the folder read-only, as the poller would; return what worked.

    Raises PollFailed saying what to fix. `sequencer doctor` runs it for each mailbox.
    """
    if not settings.get("host"):
        raise PollFailed("no IMAP host in the inbound settings; run `sequencer mailboxes inbound`")
    security = settings.get("security", "ssl")
    settings = {**settings, "port": settings.get("port") or DEFAULT_PORTS.get(security, 993), "timeout": timeout}
    conn = _open(settings)
    folder = settings.get("folder") or "INBOX"
    try:
        typ, data = conn.select(_quote(folder), readonly=True)
        if typ != "OK":
            raise PollFailed(f"folder {folder} cannot be opened on {_where(settings)}: {_text(data)}; "
                             "check --folder")
    finally:
        _close(conn)
    return f"logged in as {settings['username']} at {settings['host']}:{settings['port']} ({security}), folder {folder}"


def _open(settings: dict[str, Any]) -> imaplib.IMAP4:
    """Connect and log in; every failure becomes a PollFailed that says what to fix."""
    password = _password(settings)
    host, port, security = settings["host"], int(settings["port"]), settings.get("security", "ssl")
    timeout = float(settings.get("timeout", TIMEOUT_SECONDS))
    try:
        if security == "ssl":
            conn: imaplib.IMAP4 = imaplib.IMAP4_SSL(host, port, ssl_context=_ssl_context(settings), timeout=timeout)
        else:
            conn = imaplib.IMAP4(host, port, timeout=timeout)
            if security == "starttls":
                try:
                    conn.starttls(ssl_context=_ssl_context(settings))
                except BaseException:
                    _close(conn)
                    raise
    except (imaplib.IMAP4.error, OSError) as exc:
        raise PollFailed(f"cannot connect to {_where(settings)}: {_text(exc)}") from None
    try:
        conn.login(settings["username"], password)
    except (imaplib.IMAP4.error, OSError) as exc:
        _close(conn)
        raise PollFailed(f"login failed for {settings['username']} at {_where(settings)}: {_text(exc)}; "
                         "check the username and the (app) password") from None
    return conn


def _password(settings: dict[str, Any]) -> str:
    if settings.get("password_env"):
        var = settings["password_env"]
        if var not in os.environ:
            raise PollFailed(f"the IMAP password is read from the environment variable {var}, which is not set "
                             "where the worker runs; export it there")
        return os.environ[var]
    if settings.get("password"):
        return settings["password"]
    raise PollFailed("no IMAP password is configured; run `sequencer mailboxes inbound` with --password-env")


def _ssl_context(settings: dict[str, Any]) -> ssl.SSLContext:
    # Always verified: a private CA or a self-signed server certificate is trusted through ca_file.
    return ssl.create_default_context(cafile=settings.get("ca_file") or None)


def _select(conn: imaplib.IMAP4, settings: dict[str, Any]) -> int:
    """Open the folder (read-only unless messages get marked or moved) and return its UIDVALIDITY."""
    folder = settings.get("folder") or "INBOX"
    writes = bool(settings.get("mark_seen") or settings.get("move_to"))
    typ, data = conn.select(_quote(folder), readonly=not writes)
    if typ != "OK":
        raise PollFailed(f"folder {folder} cannot be opened on {_where(settings)}: {_text(data)}; "
                         "check --folder")
    _, values = conn.response("UIDVALIDITY")
    try:
        return int(values[-1])
    except (TypeError, ValueError, IndexError):
        raise PollFailed(f"{_where(settings)} sent no UIDVALIDITY for {folder}; it cannot be polled safely") from None


def _search(conn: imaplib.IMAP4, first: int) -> list[int]:
    typ, data = conn.uid("SEARCH", f"UID {first}:*")
    if typ != "OK":
        raise imaplib.IMAP4.error(f"UID SEARCH refused: {_text(data)}")
    # "UID n:*" always matches the last message, even when its UID is below n.
    return sorted(uid for uid in (int(x) for x in b" ".join(d or b"" for d in data).split()) if uid >= first)


def _fetch(conn: imaplib.IMAP4, uid: int) -> bytes | None:
    """Return the whole message without setting \\Seen, or None when it is gone."""
    typ, data = conn.uid("FETCH", str(uid), "(BODY.PEEK[])")
    if typ != "OK":
        raise imaplib.IMAP4.error(f"UID FETCH {uid} refused: {_text(data)}")
    for item in data:
        if isinstance(item, tuple) and re.search(rb"\bUID %d\b" % uid, item[0]):
            return item[1]
    return None


def _dispose(conn: imaplib.IMAP4, uid: int, settings: dict[str, Any]) -> str | None:
    """Mark the handled message seen and/or move it, as configured; return what went wrong, if anything."""
    try:
        if settings.get("mark_seen"):
            typ, data = conn.uid("STORE", str(uid), "+FLAGS.SILENT", r"(\Seen)")
            if typ != "OK":
                return f"could not mark UID {uid} seen: {_text(data)}"
        if settings.get("move_to"):
            return _move(conn, uid, settings["move_to"])
    except imaplib.IMAP4.error as exc:
        return f"could not mark or move UID {uid}: {_text(exc)}"
    return None


def _move(conn: imaplib.IMAP4, uid: int, folder: str) -> str | None:
    target = _quote(folder)
    command = "MOVE" if "MOVE" in conn.capabilities else "COPY"
    typ, data = conn.uid(command, str(uid), target)
    if typ == "NO" and b"TRYCREATE" in b" ".join(d for d in data if isinstance(d, bytes)):
        conn.create(target)
        typ, data = conn.uid(command, str(uid), target)
    if typ != "OK":
        return f"could not move UID {uid} to {folder}: {_text(data)}"
    if command == "COPY":
        typ, data = conn.uid("STORE", str(uid), "+FLAGS.SILENT", r"(\Deleted)")
        if typ != "OK":
            return f"copied UID {uid} to {folder} but could not delete it: {_text(data)}"
        # UID EXPUNGE removes only this message, not others a person flagged \Deleted.
        typ, data = conn.uid("EXPUNGE", str(uid)) if "UIDPLUS" in conn.capabilities else conn.expunge()
        if typ != "OK":
            return f"copied UID {uid} to {folder} but could not expunge it: {_text(data)}"
    return None


def _advance(core: Core, mailbox_id: int, validity: int, uid: int) -> None:
    with core.session():
        mailbox = core.sender_state(mailbox_id, lock=True)
        if mailbox.epoch == validity and (mailbox.position or 0) >= uid:
            return  # another poller got further meanwhile
        core.save_sender_state(mailbox_id, epoch=validity, position=uid)


def _record_success(core: Core, mailbox_id: int, validity: int, warning: str | None) -> None:
    with core.session():
        mailbox = core.sender_state(mailbox_id, lock=True)
        position = {}
        if mailbox.epoch != validity:
            # Nothing was read under the new UIDVALIDITY (an empty folder): start it from the beginning.
            position = {"epoch": validity, "position": 0}
        core.save_sender_state(mailbox_id, checked_at=core.now(), error=warning, failures=0, retry_at=None,
                               **position)


def _record_failure(core: Core, mailbox_id: int, message: str) -> None:
    now = core.now()
    with core.session():
        failures = core.sender_state(mailbox_id, lock=True).failures + 1
        core.save_sender_state(mailbox_id, failures=failures, error=message[:2000], checked_at=now,
                               retry_at=now + backoff(failures))


def backoff(failures: int) -> timedelta:
    """Return the wait before the next try after `failures` failures in a row: 1 min doubling, at most 1 h."""
    doublings = min(max(failures - 1, 0), 20)  # far past the cap already; keeps the number small
    return min(BACKOFF_FIRST * 2 ** doublings, BACKOFF_MAX)


def _close(conn: imaplib.IMAP4) -> None:
    try:
        conn.logout()
    except (imaplib.IMAP4.error, OSError):
        pass


def _quote(folder: str) -> str:
    return '"' + folder.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _where(settings: dict[str, Any]) -> str:
    return f"{settings.get('host')}:{settings.get('port')} ({settings.get('security', 'ssl')})"


def _text(value: Any) -> str:
    """Turn an imaplib error or response into one readable line."""
    if isinstance(value, imaplib.IMAP4.error) and value.args:
        value = value.args[0]  # the server's own words, often bytes
    elif isinstance(value, BaseException):
        value = str(value) or type(value).__name__
    if isinstance(value, (list, tuple)):
        value = b" ".join(v if isinstance(v, bytes) else str(v).encode() for v in value if v is not None)
    if isinstance(value, bytes):
        value = value.decode("utf-8", errors="replace")
    return " ".join(str(value).split()) or "no detail"


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
