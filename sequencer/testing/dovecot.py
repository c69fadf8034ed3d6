"""A throwaway Dovecot IMAP server for tests: its own config, users, maildirs and log in a temp folder.

Dovecot comes from Debian's packages (`apt-get install dovecot-imapd`); it runs in the
foreground (`dovecot -F`) on 127.0.0.1 with three listeners: plain IMAP (which also
offers STARTTLS) and IMAPS, both with a self-signed certificate made by `openssl`.
Users live in a passwd-file made up front, so every test can have a user, and so an
INBOX, of its own.
"""
from __future__ import annotations

import imaplib
import os
import pwd
import re
import shutil
import signal
import socket
import ssl
import subprocess
import tempfile
import time
from pathlib import Path

from sequencer.testing.postgres import free_port

DOVECOT = Path(os.environ.get("SEQUENCER_DOVECOT", "/usr/sbin/dovecot"))
PASSWORD = "imap-test-password"
# Users made up front, all with PASSWORD: one per test is plenty for a session.
USERS = 200


class DovecotUnavailable(RuntimeError):
    """Dovecot cannot be started here; the message says why."""


CONFIG = """\
instance_name = seq-test-{port}
base_dir = {dir}/run
state_dir = {dir}/state
log_path = {dir}/dovecot.log
info_log_path = {dir}/dovecot.log
protocols = imap
listen = 127.0.0.1
default_internal_user = {internal_user}
default_internal_group = {internal_group}
default_login_user = {login_user}
first_valid_uid = {uid}
last_valid_uid = 0
auth_mechanisms = plain login
auth_verbose = yes
auth_failure_delay = 0
disable_plaintext_auth = no
ssl = yes
ssl_cert = <{dir}/cert.pem
ssl_key = <{dir}/key.pem
ssl_min_protocol = TLSv1.2
mail_location = maildir:~/Maildir
mail_uid = {mail_user}
mail_gid = {mail_group}
passdb {{
  driver = passwd-file
  args = scheme=PLAIN username_format=%u {dir}/passwd
}}
userdb {{
  driver = static
  args = home={dir}/home/%u
}}
service imap-login {{
  inet_listener imap {{
    address = 127.0.0.1
    port = {port}
  }}
  inet_listener imaps {{
    address = 127.0.0.1
    port = {ssl_port}
    ssl = yes
  }}
}}
service anvil {{
  chroot =
}}
namespace inbox {{
  inbox = yes
  separator = /
}}
"""


class Dovecot:
    """One Dovecot master process; `start()`, `restart()` and `stop()` keep the ports and the mail."""

    def __init__(self) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="seq-dovecot-"))
        self.port = free_port()
        self.ssl_port = free_port()
        self.host = "127.0.0.1"
        self.process: subprocess.Popen | None = None
        self.as_root = os.geteuid() == 0
        self._users = 0

    @property
    def cert(self) -> Path:
        return self.dir / "cert.pem"

    @property
    def log(self) -> Path:
        return self.dir / "dovecot.log"

    def start(self) -> "Dovecot":
        if not DOVECOT.exists():
            raise DovecotUnavailable(f"no Dovecot at {DOVECOT}; install the Debian package dovecot-imapd")
        if shutil.which("openssl") is None:
            raise DovecotUnavailable("no openssl command to make the test certificate; install openssl")
        if not self.cert.exists():
            self._prepare()
        self._launch()
        return self

    def _prepare(self) -> None:
        if self.as_root:
            # Dovecot will not give mail access to root: the mail and its own processes run as its users.
            mail_user, internal_user, login_user = "dovecot", "dovecot", "dovenull"
            try:
                pwd.getpwnam("dovecot"), pwd.getpwnam("dovenull")
            except KeyError:
                raise DovecotUnavailable("the users dovecot and dovenull are missing; install dovecot-core") from None
        else:
            mail_user = internal_user = login_user = pwd.getpwuid(os.getuid()).pw_name
        group = _group_of(mail_user)
        uid = pwd.getpwnam(mail_user).pw_uid
        (self.dir / "home").mkdir()
        (self.dir / "passwd").write_text("".join(f"{_user(n)}:{{PLAIN}}{PASSWORD}\n" for n in range(1, USERS + 1)),
                                         encoding="utf-8")
        if self.as_root:
            # The temp folder is private (0700); Dovecot's unprivileged processes must reach the homes.
            self.dir.chmod(0o755)
            shutil.chown(self.dir / "home", mail_user, group)
        subprocess.run(
            ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=127.0.0.1",
             "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost",
             "-keyout", str(self.dir / "key.pem"), "-out", str(self.cert)],
            check=True, capture_output=True,
        )
        (self.dir / "dovecot.conf").write_text(CONFIG.format(
            dir=self.dir, port=self.port, ssl_port=self.ssl_port, uid=min(uid, 500) or 1,
            internal_user=internal_user, internal_group=_group_of(internal_user), login_user=login_user,
            mail_user=mail_user, mail_group=group,
        ), encoding="utf-8")

    def _launch(self) -> None:
        self.process = subprocess.Popen(
            [str(DOVECOT), "-F", "-c", str(self.dir / "dovecot.conf")],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True,
        )
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                output = self.process.stdout.read().decode(errors="replace") if self.process.stdout else ""
                raise DovecotUnavailable(f"Dovecot exited with {self.process.returncode}: {output.strip()} "
                                         f"{self._log_tail()}")
            try:
                with socket.create_connection((self.host, self.port), timeout=1) as sock:
                    if sock.recv(200).startswith(b"* OK"):
                        return
            except OSError:
                time.sleep(0.05)
        self.stop()
        raise DovecotUnavailable(f"Dovecot did not answer on {self.host}:{self.port} within 20 s {self._log_tail()}")

    def _log_tail(self) -> str:
        try:
            return "; log: " + " | ".join(self.log.read_text(errors="replace").splitlines()[-5:])
        except FileNotFoundError:
            return ""

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()
        if self.process.stdout:
            self.process.stdout.close()

    def restart(self) -> None:
        self.stop()
        self._launch()

    def destroy(self) -> None:
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)

    def add_user(self) -> str:
        """Return a user nobody has used yet (and so a fresh INBOX)."""
        self._users += 1
        if self._users > USERS:
            # Dovecot re-reads a changed passwd-file at most once a second.
            time.sleep(1.1)
            with open(self.dir / "passwd", "a", encoding="utf-8") as passwd:
                passwd.write(f"{_user(self._users)}:{{PLAIN}}{PASSWORD}\n")
        return _user(self._users)

    def connect(self, user: str, password: str = PASSWORD) -> imaplib.IMAP4:
        conn = imaplib.IMAP4(self.host, self.port, timeout=10)
        conn.login(user, password)
        return conn

    def append(self, user: str, message: bytes, folder: str = "INBOX") -> int:
        """Deliver a message into the user's folder (IMAP APPEND) and return its UID."""
        conn = self.connect(user)
        try:
            if folder != "INBOX":
                conn.create(folder)
            typ, data = conn.append(folder, None, None, message)
            assert typ == "OK", data
            found = re.search(rb"APPENDUID \d+ (\d+)", data[0] or b"")
            return int(found.group(1)) if found else 0
        finally:
            conn.logout()

    def flags(self, user: str, folder: str = "INBOX") -> dict[int, set[str]]:
        """Return the flags of every message in the folder by UID, without changing any."""
        conn = self.connect(user)
        try:
            typ, _ = conn.select(folder, readonly=True)
            assert typ == "OK", f"no folder {folder}"
            typ, data = conn.uid("FETCH", "1:*", "(FLAGS)")
            result: dict[int, set[str]] = {}
            for item in data:
                if not item:
                    continue
                found = re.search(rb"UID (\d+) FLAGS \(([^)]*)\)", item if isinstance(item, bytes) else item[0])
                if found:
                    result[int(found.group(1))] = set(found.group(2).decode().split())
            return result
        finally:
            conn.logout()

    def uidvalidity(self, user: str, folder: str = "INBOX") -> int:
        conn = self.connect(user)
        try:
            typ, data = conn.status(folder, "(UIDVALIDITY)")
            return int(re.search(rb"UIDVALIDITY (\d+)", data[0]).group(1))
        finally:
            conn.logout()

    def change_uidvalidity(self, user: str) -> None:
        """Forget the user's UID list and indexes, as a rebuilt server would: the INBOX gets a new UIDVALIDITY.

        The messages stay; they get new UIDs under the new UIDVALIDITY.
        """
        self.stop()
        maildir = self.dir / "home" / user / "Maildir"
        for path in maildir.glob("dovecot*"):
            if path.name != "dovecot-uidvalidity" and not path.name.startswith("dovecot-uidvalidity."):
                path.unlink() if path.is_file() else shutil.rmtree(path)
        self._launch()

    def login_failures(self, user: str) -> int:
        """Count the failed logins of a user in Dovecot's log."""
        text = self.log.read_text(errors="replace") if self.log.exists() else ""
        return sum(1 for line in text.splitlines()
                   if f"user=<{user}>" in line and "auth failed" in line)

    def ssl_context(self) -> ssl.SSLContext:
        return ssl.create_default_context(cafile=str(self.cert))


def _user(number: int) -> str:
    return f"user{number}@imap.test"


def _group_of(user: str) -> str:
    import grp

    return grp.getgrgid(pwd.getpwnam(user).pw_gid).gr_name
