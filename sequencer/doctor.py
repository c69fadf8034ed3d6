"""What a sender needs, checked: postal address, links, secret, mailbox logins, SPF, DKIM and DMARC.

The core never imports a channel plugin: SMTP logins and DKIM keys are asked of the email
channel through two optional methods (`check_sender`, `dkim_record`; docs/deliverability.md).
"""
from __future__ import annotations

import base64
import binascii
import ipaddress
import re
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Iterable, Literal, Mapping
from urllib.parse import urlsplit

import sqlalchemy as sa

from sequencer.channels import Channel, Sender, SenderState
from sequencer.config import GENERATE_SECRET, MIN_SECRET_BYTES
from sequencer.models import Mailbox

if TYPE_CHECKING:
    from sequencer.plugins import Plugins
    from sequencer.runtime import Runtime

Status = Literal["ok", "warn", "fail", "skip"]
DOCS = "docs/deliverability.md"
# Secrets shipped in examples, demos and tests: anyone can forge unsubscribe tokens with them.
KNOWN_SECRETS = frozenset({
    "demo-secret-key-not-for-production", "test-secret-key", "secret", "secret-key", "secret_key", "changeme",
    "change-me", "change_me", "please-change-me", "dev", "development", "devkey", "dev-secret", "your-secret-key",
    "insecure", "default",
})
# Names recipients can never reach (RFC 6761, RFC 6762, ICANN's .internal).
LOCAL_SUFFIXES = (".localhost", ".local", ".test", ".example", ".invalid", ".internal", ".lan", ".home.arpa")
MAILBOX_WORKERS = 8


@dataclass(frozen=True)
class Check:
    """One finding: what was checked, ok | warn | fail | skip, what was seen, and how to fix it."""

    name: str
    status: Status
    detail: str
    fix: str = ""


def run_checks(runtime: Runtime, *, dns_resolver: Any = None, timeout: float = 5) -> list[Check]:
    """Check everything a sender needs and return the findings, in a stable order.

    dns_resolver answers `resolve(name, rdtype)` like a dnspython Resolver (default: the
    system's, with `timeout` as its lifetime). Nothing here raises for a network problem.
    """
    settings = runtime.settings
    checks = [check_postal_address(settings.sending.postal_address), check_base_url(settings.web.base_url),
              check_secret_key(settings.web.signing_key, missing=settings.web.signing_key_missing)]
    channel = runtime.plugins.channel("email")
    with runtime.session() as session:
        checks.append(_check_email_plugin(runtime, session, channel))
        mailboxes = [_MailboxInfo.of(m) for m in session.scalars(sa.select(Mailbox).order_by(Mailbox.address))]
        # Channels that send by themselves; a manual-only one (tasks) has no provider to ask.
        others = {name: reason for name, reason in sorted(runtime.plugins.channel_status(session).items())
                  if name != "email" and runtime.plugins.channel(name).automatic}
    checks.extend(_check_channel(runtime.plugins, name, reason) for name, reason in others.items())
    if not mailboxes:
        checks.append(Check("mailboxes", "warn", "no mailboxes: email steps have no address to send from",
                            "add one: `sequencer mailboxes add ADDRESS --owner USER_EMAIL`"))
    with ThreadPoolExecutor(max_workers=MAILBOX_WORKERS) as pool:
        for found in pool.map(lambda m: _check_mailbox(m, channel, runtime.plugins, timeout), mailboxes):
            checks.extend(found)
    checks.extend(_check_dns(mailboxes, channel, _Dns.open(dns_resolver, timeout)))
    return checks


# Configuration


def check_postal_address(postal_address: str | None) -> Check:
    address = (postal_address or "").strip()
    if address:
        return Check("postal_address", "ok", address.replace("\n", ", "))
    return Check("postal_address", "fail",
                 "no postal address: CAN-SPAM requires one in every commercial email, so email steps wait",
                 "set [sending] postal_address in config.toml")


def check_base_url(base_url: str) -> Check:
    fix = 'set [web] base_url in config.toml to the public https address of Sequencer, e.g. "https://outreach.example.com"'
    parts = urlsplit(base_url.strip())
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return Check("base_url", "fail", f"{base_url!r} is not an absolute http(s) URL", fix)
    if _is_local_host(parts.hostname):
        return Check("base_url", "warn", f"{base_url} is not reachable from the internet: unsubscribe links in "
                     "emails would not work for recipients", fix)
    if parts.scheme != "https":
        return Check("base_url", "fail", f"{base_url} is not https: one-click unsubscribe (RFC 8058) needs an "
                     "https link, and mailbox providers ignore the header without one", fix)
    return Check("base_url", "ok", base_url)


def check_secret_key(secret_key: str | None, *, missing: str = "[web] secret_key is not set") -> Check:
    fix = (f"generate one with `{GENERATE_SECRET}` and set "
           '[web] secret_key = { env = "SEQUENCER_SECRET_KEY" }; do it before the first send: a new key '
           "breaks the unsubscribe links of mail already sent")
    if secret_key is None:
        return Check("secret_key", "fail", f"{missing}: unsubscribe links and sign-in cannot be signed", fix)
    lowered = secret_key.strip().lower()
    if lowered in KNOWN_SECRETS or "not-for-production" in lowered or "changeme" in lowered.replace("-", ""):
        return Check("secret_key", "warn", "[web] secret_key is a published demo or default value: anyone could "
                     "forge unsubscribe links and sessions", fix)
    size = len(secret_key.encode("utf-8"))
    if size < MIN_SECRET_BYTES:
        # The same measure `serve` and `worker` refuse to start below (sequencer.config).
        return Check("secret_key", "warn", f"[web] secret_key is {size} bytes long; use at least "
                     f"{MIN_SECRET_BYTES} random bytes", fix)
    return Check("secret_key", "ok", f"{size} bytes")


def _is_local_host(host: str) -> bool:
    host = host.lower().rstrip(".")
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return host == "localhost" or "." not in host or host.endswith(LOCAL_SUFFIXES)
    return not address.is_global


def _check_email_plugin(runtime: Runtime, session: Any, channel: Channel | None) -> Check:
    if channel is None:
        return Check("email plugin", "fail", "no email channel is installed: email steps wait",
                     "install the email plugin: `pip install -e plugins/email` (the sequencer-email distribution)")
    plugin = runtime.plugins.channel_plugin("email") or "email"
    if plugin not in runtime.plugins.enabled_plugins(session):
        return Check("email plugin", "fail", f"plugin {plugin} is disabled: email steps wait",
                     f"`sequencer plugins enable {plugin}`")
    reason = channel.unavailable_reason()
    if reason is not None:
        return Check("email plugin", "fail", reason,
                     f"fix the setting named above in config.toml (plugins/email/README.md, {DOCS})")
    return Check("email plugin", "ok", f"plugin {plugin} enabled and configured")


def _check_channel(plugins: Plugins, name: str, reason: str | None) -> Check:
    """Every other channel: its provider asked by its own health check (texts and calls: the Twilio account)."""
    label = f"{name} channel"
    if reason is not None:
        # Not set up, or disabled: a team that does not use the channel has nothing to fix.
        return Check(label, "warn", f"cannot send: {reason}; its steps wait (channel_unavailable)",
                     "set it up if your cadences use it (its plugin's README), or leave it")
    health = plugins.channel(name).health()
    if not health.ok:
        return Check(label, "fail", health.detail, "fix the setting named above, then `sequencer plugins list`")
    return Check(label, "ok", health.detail)


# Mailboxes: SMTP and IMAP logins


@dataclass(frozen=True)
class _MailboxInfo:
    """What the checks need of a mailbox, read before any network call so no transaction stays open."""

    address: str
    display_name: str
    state: str
    held_reason: str | None
    transport: Mapping[str, Any] = field(default_factory=dict)
    inbound: Mapping[str, Any] = field(default_factory=dict)

    @classmethod
    def of(cls, mailbox: Mailbox) -> _MailboxInfo:
        return cls(mailbox.address, mailbox.display_name, mailbox.state, mailbox.held_reason,
                   dict(mailbox.transport or {}), dict(mailbox.inbound or {}))

    @property
    def domain(self) -> str:
        return self.address.rpartition("@")[2].lower()

    @property
    def sender(self) -> Sender:
        return Sender(address=self.address, display_name=self.display_name, transport=self.transport)


def _check_mailbox(mailbox: _MailboxInfo, channel: Channel | None, plugins: Plugins, timeout: float) -> list[Check]:
    checks = []
    if mailbox.state == "held":
        checks.append(Check(f"mailbox {mailbox.address}", "warn",
                            f"held, nothing is sent from it: {mailbox.held_reason or 'no reason recorded'}",
                            f"fix the cause, then `sequencer mailboxes release {mailbox.address}` ({DOCS})"))
    checks.append(_check_smtp(mailbox, channel, timeout))
    if mailbox.inbound:
        checks.append(_check_imap(mailbox, plugins, timeout))
    return checks


def _check_smtp(mailbox: _MailboxInfo, channel: Channel | None, timeout: float) -> Check:
    name = f"smtp {mailbox.address}"
    health = channel.check_sender(mailbox.sender, timeout=timeout) if channel is not None else None
    if health is None:
        return Check(name, "skip", "the installed email channel offers no login check (check_sender)")
    if health.ok:
        return Check(name, "ok", health.detail)
    return Check(name, "fail", f"mailbox {mailbox.address}: {health.detail}",
                 "check host, port, security, username and password in [plugins.email] or in the mailbox's "
                 "own transport settings")


def _check_imap(mailbox: _MailboxInfo, plugins: Plugins, timeout: float) -> Check:
    name = f"imap {mailbox.address}"
    fix = "check host, port, security, username, password (or password_env) and folder in the mailbox's inbound settings"
    sender = SenderState(sender_id=0, address=mailbox.address, settings=mailbox.inbound)
    answers = [h for h in plugins.hook.check_inbound(sender=sender, timeout=timeout) if h is not None]
    if not answers:
        return Check(name, "skip", "no installed plugin reads this mailbox's incoming mail (check_inbound)")
    failed = [h for h in answers if not h.ok]
    if failed:
        return Check(name, "fail", f"mailbox {mailbox.address}: {failed[0].detail}", fix)
    return Check(name, "ok", answers[0].detail)


# DNS: SPF, DMARC, DKIM


class _DnsDown(Exception):
    """DNS cannot answer at all (no resolver, no network, timeouts)."""


class _Dns:
    """TXT lookups that turn every resolver failure into an answer or _DnsDown, never a crash or a long hang."""

    def __init__(self, resolver: Any, down: str | None) -> None:
        self.resolver = resolver
        self.down = down

    @classmethod
    def open(cls, resolver: Any, timeout: float) -> _Dns:
        """Make the resolver (unless given) and ask for the root zone: a working resolver always answers."""
        try:
            import dns.exception
            import dns.resolver
        except ImportError:
            return cls(None, "dnspython is not installed (pip install dnspython)")
        if resolver is None:
            try:
                resolver = dns.resolver.Resolver()
            except dns.exception.DNSException as exc:
                return cls(None, f"no DNS resolver is configured ({exc})")
            resolver.timeout, resolver.lifetime = min(2.0, timeout), timeout
        dns_ = cls(resolver, None)
        try:
            if not dns_._query(".", "NS"):
                dns_.down = "the resolver has no answer for the root zone"
        except _DnsDown as exc:
            dns_.down = str(exc)
        return dns_

    def _query(self, name: str, rdtype: str) -> list[Any]:
        import dns.exception
        import dns.resolver

        try:
            return list(self.resolver.resolve(name, rdtype))
        except (dns.resolver.NXDOMAIN, dns.resolver.NoAnswer):
            if name == ".":
                raise _DnsDown("the resolver says the root zone does not exist; it is not a working resolver") from None
            return []
        except dns.resolver.NoNameservers as exc:
            if name == ".":
                raise _DnsDown(f"no name server answered ({exc})") from None
            raise _LookupFailed(f"no name server could answer for {name} ({exc})") from None
        except dns.exception.DNSException as exc:  # timeouts, no configuration
            raise _DnsDown(f"{type(exc).__name__}: {exc}") from None

    def txt(self, name: str) -> list[str]:
        """Return the TXT records at name (each one's strings joined); raise _DnsDown when DNS stopped answering."""
        if self.down:
            raise _DnsDown(self.down)
        try:
            answers = self._query(name, "TXT")
        except _DnsDown as exc:
            self.down = str(exc)  # one timeout is enough: the other lookups would wait just as long
            raise
        return [b"".join(rdata.strings).decode("utf-8", "replace") for rdata in answers]


class _LookupFailed(Exception):
    """One name could not be looked up (SERVFAIL); other names may still work."""


def _check_dns(mailboxes: list[_MailboxInfo], channel: Channel | None, dns_: _Dns) -> list[Check]:
    checks: list[Check] = []
    domains = sorted({m.domain for m in mailboxes})
    records: dict[tuple[str, str], dict[str, str]] = {}  # (name, public key) -> the record
    signed: dict[str, set[str]] = {d: set() for d in domains}  # sending domain -> DKIM domains signing for it
    for mailbox in mailboxes:
        if channel is None:
            continue
        try:
            record = channel.dkim_record(mailbox.sender)
        except ValueError as exc:
            checks.append(Check(f"dkim {mailbox.address}", "fail", f"mailbox {mailbox.address}: {exc}",
                                f"fix the DKIM setting named above ({DOCS})"))
            continue
        if record is not None:
            records.setdefault((record["name"], record["public_key"]), record)
            signed[mailbox.domain].add(record["domain"])
    for domain in domains:
        checks.append(_lookup(dns_, f"spf {domain}", lambda d=domain: _spf(dns_, d)))
        checks.append(_lookup(dns_, f"dmarc {domain}", lambda d=domain: _dmarc(dns_, d)))
        if channel is not None:
            checks.extend(_dkim_alignment(domain, signed[domain]))
    for record in records.values():
        checks.append(_lookup(dns_, f"dkim {record['name']}", lambda r=record: _dkim(dns_, r)))
    return checks


def _lookup(dns_: _Dns, name: str, check: Callable[[], Check]) -> Check:
    try:
        return check()
    except _DnsDown as exc:
        return Check(name, "skip", f"DNS cannot be reached, so this was not checked: {exc}",
                     "run `sequencer doctor` again where DNS works")
    except _LookupFailed as exc:
        return Check(name, "skip", f"{exc}; receivers may have the same trouble", "check the domain's name servers")


def _spf(dns_: _Dns, domain: str) -> Check:
    name = f"spf {domain}"
    found = [t for t in dns_.txt(domain) if t.lower() == "v=spf1" or t.lower().startswith("v=spf1 ")]
    example = f'publish one TXT record at {domain}: "v=spf1 include:<your SMTP provider\'s SPF domain> -all" ({DOCS})'
    if not found:
        return Check(name, "fail", f"no SPF record (TXT \"v=spf1 ...\") at {domain}: receivers cannot tell "
                     "which servers may send as this domain", example)
    if len(found) > 1:
        return Check(name, "fail", f"{len(found)} SPF records at {domain}; receivers treat that as an error "
                     "(RFC 7208 section 3.2)", f"merge them into one TXT record at {domain}")
    terms = found[0].lower().split()
    if "+all" in terms or "all" in terms:
        return Check(name, "warn", f"{found[0]!r} lets any server on the internet send as {domain}",
                     "end the record with -all (or ~all) instead of +all")
    return Check(name, "ok", found[0])


def _dmarc(dns_: _Dns, domain: str) -> Check:
    name = f"dmarc {domain}"
    fix = (f'publish a TXT record at _dmarc.{domain}, e.g. "v=DMARC1; p=quarantine; rua=mailto:dmarc@{domain}" '
           f"(p=none first, for a few weeks, if other services also send as {domain}) ({DOCS})")
    where, tag = f"_dmarc.{domain}", "p"
    found = _dmarc_records(dns_, where)
    organizational = ".".join(domain.split(".")[-2:])  # an approximation: no public suffix list here
    if not found and organizational != domain:
        where, tag = f"_dmarc.{organizational}", "sp"
        found = _dmarc_records(dns_, where)
    if not found:
        return Check(name, "fail", f"no DMARC record (TXT \"v=DMARC1; ...\") at _dmarc.{domain}: Gmail, Yahoo and "
                     "Outlook require one from bulk senders", fix)
    if len(found) > 1:
        return Check(name, "fail", f"{len(found)} DMARC records at {where}; receivers then apply none (RFC 7489)",
                     f"keep one TXT record at {where}")
    tags = _tags(found[0])
    policy = (tags.get(tag) or tags.get("p") or "").lower()
    if policy not in ("none", "quarantine", "reject"):
        return Check(name, "fail", f"{found[0]!r} at {where} has no valid p= policy", fix)
    if policy == "none":
        return Check(name, "warn", f"{found[0]!r} at {where}: p=none asks receivers to do nothing with mail that "
                     f"fails, so anyone can still send as {domain}",
                     "once the aggregate reports (rua=) show your mail passing, move to p=quarantine, then p=reject")
    return Check(name, "ok", f"{found[0]} (at {where})")


def _dmarc_records(dns_: _Dns, where: str) -> list[str]:
    return [t for t in dns_.txt(where) if t.replace(" ", "").lower().startswith("v=dmarc1")]


def _dkim(dns_: _Dns, record: Mapping[str, str]) -> Check:
    where = record["name"]
    name = f"dkim {where}"
    fix = f'publish a TXT record at {where}: "{record["record"]}" ({DOCS})'
    published = [t for t in dns_.txt(where) if "p" in _tags(t)]
    if not published:
        return Check(name, "fail", f"no DKIM key at {where}: receivers cannot verify the signatures", fix)
    keys = [re.sub(r"\s+", "", _tags(t)["p"]) for t in published]
    if any(_same_key(k, record["public_key"]) for k in keys):
        return Check(name, "ok", f"the published key matches the signing key (selector {record['selector']})")
    if all(not k for k in keys):
        return Check(name, "fail", f"the key at {where} is revoked (empty p=)", fix)
    return Check(name, "fail", f"the key published at {where} is not the one Sequencer signs with: "
                 "receivers will reject the signatures", fix)


def _same_key(published: str, ours: str) -> bool:
    """Compare base64 public keys; a bare RSAPublicKey is the tail of the SubjectPublicKeyInfo DER."""
    try:
        theirs, mine = base64.b64decode(published, validate=True), base64.b64decode(ours)
    except (binascii.Error, ValueError):
        return False
    return bool(theirs) and (theirs == mine or mine.endswith(theirs))


def _dkim_alignment(domain: str, signing_domains: Iterable[str]) -> list[Check]:
    signing_domains = sorted(signing_domains)
    name = f"dkim {domain}"
    if not signing_domains:
        return [Check(name, "warn", f"Sequencer does not DKIM-sign mail from {domain}; fine only if your SMTP "
                      "provider signs it (Google Workspace and Microsoft 365 can)",
                      f"set dkim_selector and dkim_private_key_file in [plugins.email] ({DOCS})")]
    unaligned = [d for d in signing_domains if not _aligned(d, domain)]
    if unaligned:
        return [Check(name, "warn", f"mail from {domain} is signed as d={', '.join(unaligned)}, which DMARC does "
                      f"not count for {domain}", f"set dkim_domain to {domain} (or leave it unset)")]
    return []


def _aligned(signing: str, sending: str) -> bool:
    """Relaxed DMARC alignment, approximated by the last two labels (no public suffix list)."""
    return signing.split(".")[-2:] == sending.split(".")[-2:]


def _tags(record: str) -> dict[str, str]:
    tags = {}
    for part in record.split(";"):
        key, sep, value = part.partition("=")
        if sep:
            tags[key.strip().lower()] = value.strip()
    return tags
