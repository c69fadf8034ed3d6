"""`sequencer doctor`: configuration, SMTP/IMAP logins against local servers, DNS through a fake resolver."""
from __future__ import annotations

import base64
import dataclasses
import json
import socketserver
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import dns.resolver
import pytest
from aiosmtpd.smtp import AuthResult, LoginPassword
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from sequencer import hookimpl, users
from sequencer.channels import Health
from sequencer.doctor import Check, check_base_url, check_secret_key, run_checks
from sequencer.models import Mailbox
from sequencer.testing import Cli, write_config
from sequencer.testing.smtp import CountingHandler, closed_port, smtp_server
from tests.support.channels import FakeSms

SPF = "v=spf1 ip4:192.0.2.10 -all"
DMARC = "v=DMARC1; p=reject; rua=mailto:dmarc@example.com"


class FakeResolver:
    """Answer like a dnspython Resolver from a dict of TXT records; NXDOMAIN for anything else."""

    def __init__(self, txt: dict[str, list[str]] | None = None, *, fail: BaseException | None = None,
                 fail_after: int | None = None) -> None:
        self.txt = txt or {}
        self.fail = fail
        self.fail_after = fail_after
        self.queries: list[tuple[str, str]] = []

    def resolve(self, name: str, rdtype: str) -> list[Any]:
        self.queries.append((name, rdtype))
        if self.fail is not None and (self.fail_after is None or len(self.queries) > self.fail_after):
            raise self.fail
        if (name, rdtype) == (".", "NS"):
            return [SimpleNamespace(target="a.root-servers.net.")]
        if rdtype == "TXT" and name in self.txt:
            # Long records come in 255-byte strings, as real ones do.
            return [SimpleNamespace(strings=tuple(t.encode()[i:i + 255] for i in range(0, len(t), 255)))
                    for t in self.txt[name]]
        raise dns.resolver.NXDOMAIN()


def good_dns(**changes: list[str]) -> FakeResolver:
    records = {"example.com": [SPF, "google-site-verification=abc"], "_dmarc.example.com": [DMARC]}
    records.update({k.replace("__", "."): v for k, v in changes.items()})
    return FakeResolver(records)


def add_mailbox(runtime, address: str = "rep@example.com", *, transport: dict[str, Any] | None = None,  # noqa: ANN001
                inbound: dict[str, Any] | None = None, held: str | None = None) -> None:
    with runtime.session() as session:
        owner = f"owner-{address}"
        users.add_user(session, owner, "rep", now=runtime.now())
        mailbox: Mailbox = users.add_mailbox(session, address, owner_email=owner, now=runtime.now())
        mailbox.transport, mailbox.inbound = transport or {}, inbound or {}
        if held:
            users.hold_mailbox(session, address, held, runtime.now())


def by_name(checks: list[Check]) -> dict[str, Check]:
    names = [c.name for c in checks]
    assert len(names) == len(set(names)), names
    return {c.name: c for c in checks}


def use_dkim(runtime, key: rsa.RSAPrivateKey, selector: str = "seq1") -> None:  # noqa: ANN001
    channel = runtime.plugins.channel("email")
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption()).decode()
    settings = {**channel.context.settings, "dkim_selector": selector, "dkim_private_key": pem}
    channel.configure(dataclasses.replace(channel.context, settings=settings))


def public_b64(key: rsa.RSAPrivateKey) -> str:
    der = key.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return base64.b64encode(der).decode()


@pytest.fixture(scope="module")
def key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


# Configuration


def test_everything_in_order(runtime) -> None:  # noqa: ANN001
    add_mailbox(runtime)
    checks = by_name(run_checks(runtime, dns_resolver=good_dns()))
    assert {name: c.status for name, c in checks.items()} == {
        "postal_address": "ok",
        "base_url": "warn",  # https://sequencer.test: .test is never reachable by recipients
        "secret_key": "ok",  # TEST_SECRET_KEY, long enough for serve and worker
        "email plugin": "ok",
        "smtp rep@example.com": "ok",
        "spf example.com": "ok",
        "dmarc example.com": "ok",
        "dkim example.com": "warn",  # not signing
    }
    assert checks["spf example.com"].detail == SPF


class _Texter:
    """A plugin with a texting channel whose provider answers `health` (and a manual-only one, never asked)."""

    def __init__(self, health: Health | None, reason: str | None = None) -> None:
        class Texts(FakeSms):
            automatic = True

            def unavailable_reason(self) -> str | None:
                return reason

            def health(self) -> Health:
                assert health is not None, "an unconfigured channel's provider is not asked"
                return health

        self.channel = Texts()

    @hookimpl
    def register_channels(self, register) -> None:  # noqa: ANN001
        register(self.channel)


@pytest.mark.parametrize(("health", "reason", "status", "words"), [
    (Health(True, "ok (account Acme)"), None, "ok", "ok (account Acme)"),
    (Health(False, "the provider refused our credentials"), None, "fail", "the provider refused our credentials"),
    (None, "[plugins.texter] token is not set", "warn", "cannot send: [plugins.texter] token is not set; its steps wait"),
])
def test_every_channel_that_sends_by_itself_is_asked(runtime, health, reason, status, words) -> None:  # noqa: ANN001
    runtime.plugins.add_plugin(_Texter(health, reason), "texter")
    try:
        checks = by_name(run_checks(runtime, dns_resolver=good_dns()))
    finally:
        runtime.plugins.remove_plugin("texter")
    assert checks["sms channel"].status == status and checks["sms channel"].detail.startswith(words)
    # The email channel has its own checks; a manual-only channel (tasks) has no provider.
    assert "email channel" not in checks and "task channel" not in checks


def test_missing_postal_address_fails_with_the_fix(tmp_path: Path, db_url: str, smtp_sink, clock) -> None:  # noqa: ANN001
    from sequencer.config import load_settings
    from sequencer.runtime import Runtime

    path = write_config(tmp_path / "nopostal.toml", db_url=db_url, smtp_port=smtp_sink.port, postal_address=None)
    rt = Runtime(load_settings(path), clock)
    try:
        checks = by_name(run_checks(rt, dns_resolver=good_dns()))
    finally:
        rt.dispose()
    assert checks["postal_address"].status == "fail"
    assert checks["postal_address"].fix == "set [sending] postal_address in config.toml"
    assert checks["email plugin"].status == "fail" and "postal_address" in checks["email plugin"].detail
    result = Cli(path)("doctor", expect=1)
    assert "FAIL  postal_address" in result.output
    assert "fix: set [sending] postal_address in config.toml" in result.output


@pytest.mark.parametrize(("url", "status"), [
    ("https://outreach.example.com", "ok"),
    ("https://outreach.example.com/seq/", "ok"),
    ("http://localhost:8000", "warn"),
    ("http://127.0.0.1:8000", "warn"),
    ("https://10.1.2.3", "warn"),
    ("https://intranet", "warn"),
    ("https://sequencer.test", "warn"),
    ("http://outreach.example.com", "fail"),
    ("outreach.example.com", "fail"),
    ("/relative", "fail"),
])
def test_base_url(url: str, status: str) -> None:
    check = check_base_url(url)
    assert check.status == status
    if status != "ok":
        assert "[web] base_url" in check.fix
    if status == "warn":
        assert "unsubscribe links" in check.detail


@pytest.mark.parametrize(("secret", "status"), [
    ("demo-secret-key-not-for-production", "warn"),
    ("test-secret-key", "warn"),
    ("changeme", "warn"),
    ("short-but-random-Zx81", "warn"),
    ("n3bO0dA_0YmWSpOr0i5tQpJ4xVq1zYh9s2U7cKfLwE8", "ok"),
])
def test_secret_key(secret: str, status: str) -> None:
    check = check_secret_key(secret)
    assert check.status == status
    assert secret not in check.detail  # never print the secret itself


def test_missing_secret_key_fails_with_the_fix() -> None:
    check = check_secret_key(None, missing="config.toml: web.secret_key reads SEQUENCER_SECRET_KEY, which is not set")
    assert check.status == "fail" and "SEQUENCER_SECRET_KEY" in check.detail and "secrets.token_urlsafe" in check.fix


def test_doctor_runs_without_a_secret_key(runtime) -> None:  # noqa: ANN001
    runtime.settings.web.signing_key = None
    checks = by_name(run_checks(runtime, dns_resolver=good_dns()))
    assert checks["secret_key"].status == "fail" and checks["postal_address"].status == "ok"


def test_disabled_email_plugin_fails(runtime, cli) -> None:  # noqa: ANN001
    cli("plugins", "disable", "email")
    check = by_name(run_checks(runtime, dns_resolver=good_dns()))["email plugin"]
    assert check.status == "fail" and check.fix == "`sequencer plugins enable email`"


def test_no_mailboxes_warns(runtime) -> None:  # noqa: ANN001
    checks = by_name(run_checks(runtime, dns_resolver=good_dns()))
    assert checks["mailboxes"].status == "warn" and "sequencer mailboxes add" in checks["mailboxes"].fix
    assert not any(name.startswith(("smtp ", "spf ")) for name in checks)


def test_held_mailbox_warns_with_the_release_command(runtime) -> None:  # noqa: ANN001
    add_mailbox(runtime, held="5.7.26 unauthenticated email from example.com is not accepted")
    check = by_name(run_checks(runtime, dns_resolver=good_dns()))["mailbox rep@example.com"]
    assert check.status == "warn" and "5.7.26" in check.detail
    assert "sequencer mailboxes release rep@example.com" in check.fix


# SMTP


def authenticate(server, session, envelope, mechanism, auth_data: LoginPassword) -> AuthResult:  # noqa: ANN001
    return AuthResult(success=(auth_data.login, auth_data.password) == (b"rep", b"s3cret"), handled=False)


def test_smtp_login_works_and_a_wrong_password_fails_naming_the_mailbox(runtime) -> None:  # noqa: ANN001
    with smtp_server(CountingHandler(), authenticator=authenticate, auth_require_tls=False) as server:
        login = {"host": "127.0.0.1", "port": server.port, "username": "rep"}
        add_mailbox(runtime, "good@example.com", transport={**login, "password": "s3cret"})
        add_mailbox(runtime, "bad@example.com", transport={**login, "password": "wrong"})
        checks = by_name(run_checks(runtime, dns_resolver=good_dns()))
    good, bad = checks["smtp good@example.com"], checks["smtp bad@example.com"]
    assert good.status == "ok" and "logged in as rep" in good.detail
    assert bad.status == "fail" and "bad@example.com" in bad.detail and "535" in bad.detail
    assert "password" in bad.fix
    assert server.received == []  # a login check sends nothing


def test_smtp_closed_port_fails(runtime, cli) -> None:  # noqa: ANN001
    port = closed_port()
    add_mailbox(runtime, transport={"port": port})
    check = by_name(run_checks(runtime, dns_resolver=good_dns()))["smtp rep@example.com"]
    assert check.status == "fail" and f"127.0.0.1:{port}" in check.detail and "rep@example.com" in check.detail


# IMAP


class FakeImapHandler(socketserver.StreamRequestHandler):
    """Just enough IMAP4rev1 for a login check: CAPABILITY, LOGIN rep/s3cret, EXAMINE INBOX, LOGOUT."""

    def handle(self) -> None:
        self.wfile.write(b"* OK IMAP4rev1 fake ready\r\n")
        for raw in self.rfile:
            tag, _, rest = raw.decode().rstrip("\r\n").partition(" ")
            command, _, args = rest.partition(" ")
            command = command.upper()
            if command == "CAPABILITY":
                reply = f"* CAPABILITY IMAP4rev1 AUTH=PLAIN\r\n{tag} OK done"
            elif command == "LOGIN":
                user, _, password = args.partition(" ")
                ok = (user.strip('"'), password.strip('"')) == ("rep", "s3cret")
                reply = f"{tag} OK logged in" if ok else f"{tag} NO [AUTHENTICATIONFAILED] Invalid credentials"
            elif command == "EXAMINE":
                reply = (f"* 0 EXISTS\r\n* OK [UIDVALIDITY 7] ok\r\n{tag} OK [READ-ONLY] done" if args.strip('"') == "INBOX"
                         else f"{tag} NO no such folder")
            elif command == "LOGOUT":
                self.wfile.write(f"* BYE\r\n{tag} OK bye\r\n".encode())
                return
            else:
                reply = f"{tag} BAD unknown command"
            self.wfile.write(reply.encode() + b"\r\n")


@pytest.fixture
def imap_port() -> Iterator[int]:
    server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), FakeImapHandler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server.server_address[1]
    server.shutdown()
    server.server_close()
    thread.join()


def test_imap_login(runtime, imap_port: int, monkeypatch: pytest.MonkeyPatch) -> None:  # noqa: ANN001
    monkeypatch.setenv("SEQ_TEST_IMAP_PASSWORD", "s3cret")
    base = {"host": "127.0.0.1", "port": imap_port, "security": "none", "username": "rep"}
    add_mailbox(runtime, "good@example.com", inbound={**base, "password": "s3cret"})
    add_mailbox(runtime, "env@example.com", inbound={**base, "password_env": "SEQ_TEST_IMAP_PASSWORD"})
    add_mailbox(runtime, "bad@example.com", inbound={**base, "password": "wrong"})
    add_mailbox(runtime, "folder@example.com", inbound={**base, "password": "s3cret", "folder": "Replies"})
    add_mailbox(runtime, "unset@example.com", inbound={**base, "password_env": "SEQ_TEST_NOT_SET"})
    add_mailbox(runtime, "smtponly@example.com")
    checks = by_name(run_checks(runtime, dns_resolver=good_dns()))
    assert checks["imap good@example.com"].status == "ok"
    assert checks["imap good@example.com"].detail == f"logged in as rep at 127.0.0.1:{imap_port} (none), folder INBOX"
    assert checks["imap env@example.com"].status == "ok"
    bad = checks["imap bad@example.com"]
    assert bad.status == "fail" and "bad@example.com" in bad.detail and "AUTHENTICATIONFAILED" in bad.detail
    assert checks["imap folder@example.com"].status == "fail" and "Replies" in checks["imap folder@example.com"].detail
    assert checks["imap unset@example.com"].status == "fail"
    assert "SEQ_TEST_NOT_SET" in checks["imap unset@example.com"].detail
    assert "imap smtponly@example.com" not in checks


def test_imap_unreachable_fails(runtime) -> None:  # noqa: ANN001
    port = closed_port()
    add_mailbox(runtime, inbound={"host": "127.0.0.1", "port": port, "security": "ssl", "username": "rep",
                                  "password": "x"})
    check = by_name(run_checks(runtime, dns_resolver=good_dns(), timeout=2))["imap rep@example.com"]
    assert check.status == "fail" and f"127.0.0.1:{port}" in check.detail and "rep@example.com" in check.detail
    assert "inbound settings" in check.fix


# DNS


def test_spf_missing_fails_and_two_records_fail(runtime) -> None:  # noqa: ANN001
    add_mailbox(runtime)
    add_mailbox(runtime, "rep@two.example")
    dns_ = good_dns(example__com=["google-site-verification=abc"],
                    two__example=[SPF, "v=spf1 include:_spf.google.com ~all"], _dmarc__two__example=[DMARC])
    checks = by_name(run_checks(runtime, dns_resolver=dns_))
    missing = checks["spf example.com"]
    assert missing.status == "fail" and "no SPF record" in missing.detail and "v=spf1" in missing.fix
    assert checks["spf two.example"].status == "fail" and "2 SPF records" in checks["spf two.example"].detail


def test_spf_plus_all_warns(runtime) -> None:  # noqa: ANN001
    add_mailbox(runtime)
    check = by_name(run_checks(runtime, dns_resolver=good_dns(example__com=["v=spf1 +all"])))["spf example.com"]
    assert check.status == "warn" and "any server" in check.detail


@pytest.mark.parametrize(("records", "status", "words"), [
    (["v=DMARC1; p=none; rua=mailto:d@example.com"], "warn", "p=none"),
    (["v=DMARC1; p=quarantine"], "ok", "p=quarantine"),
    ([], "fail", "no DMARC record"),
    (["v=DMARC1; rua=mailto:d@example.com"], "fail", "no valid p="),
    (["v=DMARC1; p=reject", "v=DMARC1; p=none"], "fail", "2 DMARC records"),
], ids=["none", "quarantine", "missing", "no-policy", "two"])
def test_dmarc(runtime, records: list[str], status: str, words: str) -> None:  # noqa: ANN001
    add_mailbox(runtime)
    check = by_name(run_checks(runtime, dns_resolver=good_dns(_dmarc__example__com=records)))["dmarc example.com"]
    assert check.status == status and words in check.detail
    if status != "ok":
        assert check.fix


def test_dmarc_of_a_subdomain_falls_back_to_the_organizational_domain(runtime) -> None:  # noqa: ANN001
    add_mailbox(runtime, "rep@mail.example.com")
    dns_ = good_dns(mail__example__com=[SPF], _dmarc__example__com=["v=DMARC1; p=reject; sp=none"])
    check = by_name(run_checks(runtime, dns_resolver=dns_))["dmarc mail.example.com"]
    assert check.status == "warn" and "_dmarc.example.com" in check.detail  # sp= applies to subdomains


def test_dkim_record_matching_the_key_is_ok(runtime, key) -> None:  # noqa: ANN001
    add_mailbox(runtime)
    use_dkim(runtime, key)
    dns_ = good_dns(seq1___domainkey__example__com=[f"v=DKIM1; k=rsa; p={public_b64(key)}"])
    checks = by_name(run_checks(runtime, dns_resolver=dns_))
    assert checks["dkim seq1._domainkey.example.com"].status == "ok"
    assert "dkim example.com" not in checks  # signing, aligned: nothing to warn about


def test_dkim_record_mismatching_the_key_fails(runtime, key) -> None:  # noqa: ANN001
    add_mailbox(runtime)
    use_dkim(runtime, key)
    other = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    dns_ = good_dns(seq1___domainkey__example__com=[f"v=DKIM1; k=rsa; p={public_b64(other)}"])
    check = by_name(run_checks(runtime, dns_resolver=dns_))["dkim seq1._domainkey.example.com"]
    assert check.status == "fail" and "not the one Sequencer signs with" in check.detail
    assert f"p={public_b64(key)}" in check.fix  # the record to publish instead


def test_dkim_record_missing_fails_with_the_record_to_publish(runtime, key) -> None:  # noqa: ANN001
    add_mailbox(runtime)
    use_dkim(runtime, key)
    check = by_name(run_checks(runtime, dns_resolver=good_dns()))["dkim seq1._domainkey.example.com"]
    assert check.status == "fail"
    assert check.fix.startswith(f'publish a TXT record at seq1._domainkey.example.com: "v=DKIM1; k=rsa; p={public_b64(key)}"')


def test_dkim_key_file_that_cannot_be_read_fails_naming_the_setting(runtime, tmp_path: Path) -> None:  # noqa: ANN001
    add_mailbox(runtime, transport={"dkim_selector": "s", "dkim_private_key_file": str(tmp_path / "gone.pem")})
    check = by_name(run_checks(runtime, dns_resolver=good_dns()))["dkim rep@example.com"]
    assert check.status == "fail" and "dkim_private_key_file" in check.detail


def _resolvers_without_dns() -> list[Any]:
    closed = dns.resolver.Resolver(configure=False)
    closed.nameservers, closed.port = ["127.0.0.1"], closed_port()
    closed.timeout, closed.lifetime = 0.5, 1.0
    return [
        FakeResolver(fail=dns.resolver.NoNameservers()),
        FakeResolver(fail=dns.resolver.LifetimeTimeout(timeout=1.0, errors=[])),
        FakeResolver(fail=dns.resolver.NoResolverConfiguration()),
        FakeResolver(fail=dns.resolver.NXDOMAIN()),  # a sandbox resolver that says nothing exists
        closed,  # a real resolver and nothing listening
    ]


@pytest.mark.parametrize("resolver", _resolvers_without_dns(),
                         ids=["no-nameservers", "timeout", "no-configuration", "nothing-exists", "closed-port"])
def test_no_dns_skips_the_dns_checks(runtime, key, resolver) -> None:  # noqa: ANN001
    add_mailbox(runtime)
    use_dkim(runtime, key)
    started = time.monotonic()
    checks = by_name(run_checks(runtime, dns_resolver=resolver, timeout=1))
    assert time.monotonic() - started < 8
    for name in ("spf example.com", "dmarc example.com", "dkim seq1._domainkey.example.com"):
        assert checks[name].status == "skip" and "DNS cannot be reached" in checks[name].detail


def test_dns_that_stops_answering_midway_is_not_asked_again(runtime) -> None:  # noqa: ANN001
    add_mailbox(runtime)
    add_mailbox(runtime, "rep@two.example")
    resolver = FakeResolver({"example.com": [SPF]}, fail=dns.resolver.LifetimeTimeout(timeout=1.0, errors=[]),
                            fail_after=2)
    checks = by_name(run_checks(runtime, dns_resolver=resolver))
    assert checks["spf example.com"].status == "ok"
    assert [checks[n].status for n in ("dmarc example.com", "spf two.example", "dmarc two.example")] == ["skip"] * 3
    assert len(resolver.queries) == 3  # the root probe, the SPF lookup, the lookup that timed out


# The command


def test_json_output_and_exit_status(runtime, cli, monkeypatch: pytest.MonkeyPatch) -> None:  # noqa: ANN001
    add_mailbox(runtime)
    resolver = good_dns()
    # The command builds its own resolver: hand it the fake so no test ever asks real DNS.
    monkeypatch.setattr(dns.resolver, "Resolver", lambda: resolver)
    result = cli("doctor", "--format", "json", expect=0)
    rows = json.loads(result.output)
    assert {r["name"]: r["status"] for r in rows}["spf example.com"] == "ok"
    assert all(set(r) == {"name", "status", "detail", "fix"} for r in rows)
    assert {r["status"] for r in rows} <= {"ok", "warn", "skip"}

    table = cli("doctor", expect=0).output
    assert "ok    spf example.com" in table and "warn  base_url" in table
    assert "0 failed" in table

    resolver.txt["example.com"] = []
    failed = cli("doctor", "--format", "json", expect=1)
    assert {r["name"]: r["status"] for r in json.loads(failed.output)}["spf example.com"] == "fail"
    assert "fix: publish one TXT record at example.com" in cli("doctor", expect=1).output
