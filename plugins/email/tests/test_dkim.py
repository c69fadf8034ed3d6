"""DKIM signing in the email plugin: messages sent through a real SMTP sink verify against the public key."""
from __future__ import annotations

import base64
import math
import re
import secrets
from pathlib import Path

import dkim
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from sequencer.channels import ChannelContext, Sender
from sequencer.config import load_settings
from sequencer.mailsink import MailSink
from sequencer.plugins import Plugins
from sequencer_email import EmailChannel
from sequencer.testing import write_config
from sequencer.testing.smtp import closed_port
from test_email_channel import POSTAL, UNSUBSCRIBE, make_channel, make_touch, prepared

SELECTOR = "seq2026"


def new_key(bits: int = 2048) -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=bits)


def pem(key: rsa.RSAPrivateKey, fmt: serialization.PrivateFormat = serialization.PrivateFormat.PKCS8) -> str:
    return key.private_bytes(serialization.Encoding.PEM, fmt, serialization.NoEncryption()).decode("ascii")


def public_b64(key: rsa.RSAPrivateKey) -> str:
    der = key.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return base64.b64encode(der).decode("ascii")


@pytest.fixture(scope="module")
def key() -> rsa.RSAPrivateKey:
    return new_key()


def dns_for(records: dict[str, rsa.RSAPrivateKey]):
    """Return a dkimpy dnsfunc that publishes each key at its NAME (selector._domainkey.domain)."""
    def dnsfunc(name: bytes, timeout: float = 5) -> bytes | None:
        published = records.get(name.decode("ascii").rstrip("."))
        return f"v=DKIM1; k=rsa; p={public_b64(published)}".encode("ascii") if published else None

    return dnsfunc


def send(channel: EmailChannel, *touches) -> tuple[list, MailSink]:  # noqa: ANN001
    with MailSink() as sink:
        channel.configure(ChannelContext(settings={**channel.context.settings, "port": sink.port},
                                         postal_address=POSTAL, base_url="https://sequencer.test"))
        results = channel.send_batch(prepared(channel, *touches))
    return results, sink


def signature_tags(data: bytes) -> dict[str, str]:
    """Return the tags of the topmost DKIM-Signature header, whitespace removed."""
    match = re.search(rb"^DKIM-Signature:(.*?)\r\n(?=\S)", data, re.S | re.M)
    assert match, "no DKIM-Signature header"
    value = re.sub(r"\s+", "", match.group(1).decode("ascii"))
    return dict(tag.split("=", 1) for tag in value.split(";") if tag)


def test_signed_message_verifies_against_the_published_key(key) -> None:  # noqa: ANN001
    channel = make_channel(closed_port(), dkim_selector=SELECTOR, dkim_private_key=pem(key))
    assert channel.unavailable_reason() is None
    [result], sink = send(channel, make_touch(1))
    assert result.accepted
    [received] = sink.received
    assert received.data.startswith(b"DKIM-Signature: ")  # prepended: nothing re-folded the message after signing
    assert dkim.verify(received.data, dnsfunc=dns_for({f"{SELECTOR}._domainkey.example.com": key}))
    tags = signature_tags(received.data)
    assert tags["a"] == "rsa-sha256" and tags["c"] == "relaxed/relaxed"
    assert tags["d"] == "example.com" and tags["s"] == SELECTOR  # the sender rep@example.com's domain
    # The message a reader sees is unchanged by the signature.
    assert received.message["Subject"] == "Hello 1" and received.message["From"] == "Rita Rep <rep@example.com>"


def test_a_different_published_key_does_not_verify(key) -> None:  # noqa: ANN001
    channel = make_channel(closed_port(), dkim_selector=SELECTOR, dkim_private_key=pem(key))
    [_], sink = send(channel, make_touch(1))
    assert not dkim.verify(sink.received[0].data, dnsfunc=dns_for({f"{SELECTOR}._domainkey.example.com": new_key()}))


def test_tampered_body_or_header_fails_verification(key) -> None:  # noqa: ANN001
    channel = make_channel(closed_port(), dkim_selector=SELECTOR, dkim_private_key=pem(key))
    [_], sink = send(channel, make_touch(1, html=None))
    data = sink.received[0].data
    dnsfunc = dns_for({f"{SELECTOR}._domainkey.example.com": key})
    assert dkim.verify(data, dnsfunc=dnsfunc)
    assert b"short note." in data
    assert not dkim.verify(data.replace(b"short note.", b"short n0te."), dnsfunc=dnsfunc)
    assert not dkim.verify(data.replace(b"Subject: Hello 1", b"Subject: Hello 2"), dnsfunc=dnsfunc)


def test_thread_and_unsubscribe_headers_are_covered_by_the_signature(key) -> None:  # noqa: ANN001
    first, second = "<touch-1.abc@example.com>", "<touch-2.abc@example.com>"
    touch = make_touch(3, subject="Re: Hello 1", in_reply_to=second, references=f"{first} {second}")
    channel = make_channel(closed_port(), dkim_selector=SELECTOR, dkim_private_key=pem(key))
    [result], sink = send(channel, touch)
    assert result.accepted
    data = sink.received[0].data
    dnsfunc = dns_for({f"{SELECTOR}._domainkey.example.com": key})
    assert dkim.verify(data, dnsfunc=dnsfunc)
    signed = signature_tags(data)["h"].lower().split(":")
    for name in ("from", "to", "subject", "date", "message-id", "in-reply-to", "references",
                 "list-unsubscribe", "list-unsubscribe-post", "mime-version", "content-type"):
        assert name in signed
    # The one-click URL stays on one line after signing, and changing it breaks the signature.
    assert f"\r\nList-Unsubscribe: <{UNSUBSCRIBE}>\r\n".encode() in data
    assert not dkim.verify(data.replace(UNSUBSCRIBE.encode(), b"https://evil.test/u/x"), dnsfunc=dnsfunc)
    assert not dkim.verify(data.replace(f"In-Reply-To: {second}".encode(), f"In-Reply-To: {first}".encode()),
                           dnsfunc=dnsfunc)


def test_key_file_and_dkim_domain(key, tmp_path: Path) -> None:  # noqa: ANN001
    key_file = tmp_path / "dkim.pem"
    key_file.write_text(pem(key, serialization.PrivateFormat.TraditionalOpenSSL), encoding="ascii")
    channel = make_channel(closed_port(), dkim_selector=SELECTOR, dkim_private_key_file=str(key_file),
                           dkim_domain="Mail.Example.com")
    [result], sink = send(channel, make_touch(1))
    assert result.accepted
    assert signature_tags(sink.received[0].data)["d"] == "mail.example.com"
    assert dkim.verify(sink.received[0].data, dnsfunc=dns_for({f"{SELECTOR}._domainkey.mail.example.com": key}))


def test_mailbox_transport_overrides_the_shared_key(key) -> None:  # noqa: ANN001
    own_key = new_key()
    channel = make_channel(closed_port(), dkim_selector=SELECTOR, dkim_private_key=pem(key))
    boss = Sender(address="boss@other.example", display_name="Big Boss",
                  transport={"dkim_selector": "boss", "dkim_private_key": pem(own_key)})
    results, sink = send(channel, make_touch(1), make_touch(2, sender=boss))
    assert all(r.accepted for r in results)
    shared, own = (m.data for m in sink.received)
    dnsfunc = dns_for({f"{SELECTOR}._domainkey.example.com": key, "boss._domainkey.other.example": own_key})
    assert signature_tags(own)["s"] == "boss" and signature_tags(own)["d"] == "other.example"
    assert dkim.verify(shared, dnsfunc=dnsfunc) and dkim.verify(own, dnsfunc=dnsfunc)


def test_key_from_the_environment_through_config_toml(key, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:  # noqa: ANN001
    monkeypatch.setenv("SEQ_TEST_DKIM_KEY", pem(key))
    with MailSink() as sink:
        path = write_config(tmp_path / "config.toml", db_url=f"sqlite:///{tmp_path / 'x.db'}", smtp_port=sink.port)
        path.write_text(path.read_text() + f'dkim_selector = "{SELECTOR}"\n'
                        'dkim_private_key = { env = "SEQ_TEST_DKIM_KEY" }\n', encoding="utf-8")
        channel = Plugins(load_settings(path)).channel("email")
        assert channel is not None and channel.unavailable_reason() is None
        [result] = channel.send_batch(prepared(channel, make_touch(1)))
    assert result.accepted
    assert dkim.verify(sink.received[0].data, dnsfunc=dns_for({f"{SELECTOR}._domainkey.example.com": key}))


def test_without_dkim_settings_nothing_is_signed() -> None:
    [result], sink = send(make_channel(closed_port()), make_touch(1))
    assert result.accepted and b"DKIM-Signature" not in sink.received[0].data


def test_dkim_record_is_the_public_key_to_publish(key) -> None:  # noqa: ANN001
    channel = make_channel(closed_port(), dkim_selector=SELECTOR, dkim_private_key=pem(key))
    record = channel.dkim_record(Sender(address="rep@example.com"))
    assert record == {"selector": SELECTOR, "domain": "example.com", "name": f"{SELECTOR}._domainkey.example.com",
                      "record": f"v=DKIM1; k=rsa; p={public_b64(key)}", "public_key": public_b64(key)}
    assert make_channel(closed_port()).dkim_record(Sender(address="rep@example.com")) is None


# Unusable settings: the channel is unavailable (email steps wait), naming the setting.


def test_unreadable_key_file_makes_the_channel_unavailable(tmp_path: Path) -> None:
    channel = make_channel(closed_port(), dkim_selector=SELECTOR, dkim_private_key_file=str(tmp_path / "missing.pem"))
    reason = channel.unavailable_reason()
    assert reason is not None and "dkim_private_key_file" in reason and "missing.pem" in reason
    assert not channel.health().ok


@pytest.mark.parametrize(("settings", "named"), [
    ({"dkim_selector": SELECTOR, "dkim_private_key": "not a key"}, "dkim_private_key"),
    ({"dkim_private_key": "PEM"}, "dkim_selector"),
    ({"dkim_selector": SELECTOR}, "dkim_private_key_file"),
    ({"dkim_selector": "bad selector!", "dkim_private_key": "PEM"}, "dkim_selector"),
], ids=["garbage-key", "no-selector", "no-key", "bad-selector"])
def test_unusable_dkim_settings_are_named(settings: dict[str, str], named: str, key) -> None:  # noqa: ANN001
    settings = {k: pem(key) if v == "PEM" else v for k, v in settings.items()}
    reason = make_channel(closed_port(), **settings).unavailable_reason()
    assert reason is not None and named in reason


def weak_key() -> rsa.RSAPrivateKey:
    """Return a 512-bit RSA key, which cryptography refuses to generate (Fermat-tested primes are enough here)."""
    def prime() -> int:
        while True:
            n = secrets.randbits(256) | (1 << 255) | 1
            if all(pow(a, n - 1, n) == 1 for a in (2, 3, 5, 7, 11, 13, 17, 19, 23, 29, 31, 37)):
                return n

    while True:
        p, q, e = prime(), prime(), 65537
        if math.gcd(e, (p - 1) * (q - 1)) == 1:
            break
    d = pow(e, -1, (p - 1) * (q - 1))
    public = rsa.RSAPublicNumbers(e, p * q)
    return rsa.RSAPrivateNumbers(p, q, d, d % (p - 1), d % (q - 1), pow(q, -1, p), public).private_key()


def test_short_key_is_refused() -> None:
    reason = make_channel(closed_port(), dkim_selector=SELECTOR, dkim_private_key=pem(weak_key())).unavailable_reason()
    assert reason is not None and re.search(r"is a 51\d-bit key", reason) and "2048" in reason


def test_a_mailbox_with_a_broken_key_waits_and_the_others_go_out(key, tmp_path: Path) -> None:  # noqa: ANN001
    channel = make_channel(closed_port(), dkim_selector=SELECTOR, dkim_private_key=pem(key))
    broken = Sender(address="boss@example.com", transport={"dkim_private_key_file": str(tmp_path / "gone.pem")})
    (refused, accepted), sink = send(channel, make_touch(1, sender=broken), make_touch(2))
    assert not refused.accepted and refused.retryable
    assert "boss@example.com" in refused.error and "dkim_private_key_file" in refused.error
    assert accepted.accepted and [m.rcpt_tos for m in sink.received] == [["lead2@example.org"]]
    with pytest.raises(ValueError, match="dkim_private_key_file"):
        channel.dkim_record(broken)


def test_a_touch_cannot_bring_its_own_signature() -> None:
    with pytest.raises(ValueError, match="DKIM-Signature"):
        make_channel(25).prepare(make_touch(headers={"DKIM-Signature": "v=1; d=evil.test"}))
