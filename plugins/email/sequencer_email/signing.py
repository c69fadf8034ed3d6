"""DKIM: the signing key a mailbox uses, its DNS record, and the signature prepended to outgoing bytes."""
from __future__ import annotations

import base64
import os
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any, Mapping

import dkim
from dkim.crypto import UnparsableKeyError, parse_pem_private_key

# The DKIM settings of [plugins.email] (and of a mailbox's transport), with what `plugins list` may show.
DKIM_SCHEMA = {
    "dkim_selector": "DKIM selector: sign every message with the key published at SELECTOR._domainkey.DOMAIN",
    "dkim_private_key": 'DKIM private key, PEM text; use { env = "VAR" } to read it from the environment',
    "dkim_private_key_file": "path of the DKIM private key (PEM), instead of dkim_private_key",
    "dkim_domain": "DKIM signing domain, d= (default: the sender's domain)",
}
DKIM_KEYS = tuple(DKIM_SCHEMA)
# What a receiver checks: the identity, the thread and the unsubscribe headers (RFC 8058
# section 4 asks for List-Unsubscribe and List-Unsubscribe-Post to be signed).
SIGNED_HEADERS = (
    "From", "To", "Subject", "Date", "Message-ID", "In-Reply-To", "References",
    "List-Unsubscribe", "List-Unsubscribe-Post", "MIME-Version", "Content-Type",
)
MIN_KEY_BITS = 1024  # receivers (and dkimpy's verifier) reject shorter keys
RSA_ENCRYPTION_OID = bytes.fromhex("2a864886f70d010101")  # 1.2.840.113549.1.1.1


class DkimError(ValueError):
    """A DKIM setting that cannot be used; the message names the key and the fix."""


@dataclass(frozen=True)
class DkimKey:
    """The key a mailbox signs with: selector, domain (None: the sender's), private and public parts."""

    selector: str
    domain: str | None
    private_key: bytes = field(repr=False)
    public_key: str  # base64 DER SubjectPublicKeyInfo: the p= value of the DNS record
    bits: int

    def domain_for(self, sender_address: str) -> str:
        """Return the d= domain: dkim_domain, else the domain of the sender's address."""
        return (self.domain or sender_address.rpartition("@")[2]).lower()

    def record_name(self, sender_address: str) -> str:
        """Return where the public key is published: SELECTOR._domainkey.DOMAIN."""
        return f"{self.selector}._domainkey.{self.domain_for(sender_address)}"

    @property
    def record(self) -> str:
        """Return the TXT record to publish."""
        return f"v=DKIM1; k=rsa; p={self.public_key}"

    def sign(self, data: bytes, sender_address: str) -> bytes:
        """Return data with a DKIM-Signature header (relaxed/relaxed, rsa-sha256) on top."""
        signature = dkim.sign(
            data,
            self.selector.encode("ascii"),
            self.domain_for(sender_address).encode("ascii"),
            self.private_key,
            canonicalize=(b"relaxed", b"relaxed"),
            include_headers=[name.encode("ascii") for name in SIGNED_HEADERS],
        )
        return signature + data


def resolve_dkim(shared: Mapping[str, Any], override: Mapping[str, Any] | None = None) -> DkimKey | None:
    """Return the effective DKIM key (a mailbox's keys on top of [plugins.email]), or None when not signing.

    A mailbox that names its own key (dkim_private_key or dkim_private_key_file) replaces
    both key settings of [plugins.email], so the two never conflict.
    """
    override = {k: _env(v, k) for k, v in (override or {}).items() if k in DKIM_KEYS and v not in (None, "")}
    values = {k: v for k, v in shared.items() if k in DKIM_KEYS and v not in (None, "")}
    if {"dkim_private_key", "dkim_private_key_file"} & set(override):
        values.pop("dkim_private_key", None)
        values.pop("dkim_private_key_file", None)
    values.update(override)
    if not values:
        return None
    selector = str(values.get("dkim_selector", "")).strip()
    if "dkim_private_key" in values and "dkim_private_key_file" in values:
        raise DkimError("set either dkim_private_key or dkim_private_key_file in [plugins.email], not both")
    if "dkim_private_key" in values:
        setting, pem = "dkim_private_key", str(values["dkim_private_key"]).encode("utf-8")
    elif "dkim_private_key_file" in values:
        setting, pem = "dkim_private_key_file", _read_key_file(str(values["dkim_private_key_file"]))
    else:
        raise DkimError(f"dkim_selector {selector!r} is set but there is no key: set dkim_private_key_file "
                        "(or dkim_private_key) in [plugins.email]")
    if not selector:
        raise DkimError(f"{setting} is set but dkim_selector is not: set dkim_selector in [plugins.email] "
                        "to the selector the public key is published under")
    if not _is_dns_label(selector):
        raise DkimError(f"dkim_selector {selector!r} is not a DNS label (letters, digits, '-' and '.')")
    domain = str(values["dkim_domain"]).strip().lower() if values.get("dkim_domain") else None
    if domain is not None and not _is_dns_label(domain):
        raise DkimError(f"dkim_domain {domain!r} is not a domain name")
    private_key, public_key, bits = _load_key(pem, setting)
    return DkimKey(selector=selector, domain=domain, private_key=private_key, public_key=public_key, bits=bits)


def _env(value: Any, key: str) -> Any:
    """Resolve `{"env": "VAR"}` in a mailbox's stored settings, as config.toml does for [plugins.email]."""
    if isinstance(value, dict) and set(value) == {"env"}:
        if value["env"] not in os.environ:
            raise DkimError(f"the mailbox's {key} reads the environment variable {value['env']}, which is not set")
        return os.environ[value["env"]]
    return value


def _read_key_file(path: str) -> bytes:
    try:
        return Path(path).expanduser().read_bytes()
    except OSError as exc:
        raise DkimError(f"dkim_private_key_file {path!r} cannot be read ({exc.strerror or exc}); "
                        "fix the path in [plugins.email] or the mailbox's transport settings") from None


@lru_cache(maxsize=32)
def _load_key(pem: bytes, setting: str) -> tuple[bytes, str, int]:
    """Parse a PEM RSA private key; return it (LF line ends), its p= value and its size in bits."""
    # dkimpy's PEM reader only finds the base64 block between LF line ends.
    pem = pem.replace(b"\r\n", b"\n").strip() + b"\n"
    try:
        key = parse_pem_private_key(pem)
    except UnparsableKeyError:
        raise DkimError(f"{setting} is not a PEM RSA private key (PKCS#1 or PKCS#8, unencrypted); "
                        "generate one with `openssl genrsa -out dkim.pem 2048`") from None
    bits = key["modulus"].bit_length()
    if bits < MIN_KEY_BITS:
        raise DkimError(f"{setting} is a {bits}-bit key; receivers ignore keys under {MIN_KEY_BITS} bits: "
                        "generate a 2048-bit one")
    return pem, base64.b64encode(_public_key_der(key["modulus"], key["publicExponent"])).decode("ascii"), bits


def _public_key_der(modulus: int, exponent: int) -> bytes:
    """Return the DER SubjectPublicKeyInfo of an RSA public key (what `openssl rsa -pubout` writes)."""
    rsa_public_key = _der(0x30, _der_int(modulus) + _der_int(exponent))
    algorithm = _der(0x30, _der(0x06, RSA_ENCRYPTION_OID) + _der(0x05, b""))
    return _der(0x30, algorithm + _der(0x03, b"\x00" + rsa_public_key))


def _der(tag: int, body: bytes) -> bytes:
    size = len(body)
    if size < 0x80:
        return bytes([tag, size]) + body
    length = size.to_bytes((size.bit_length() + 7) // 8, "big")
    return bytes([tag, 0x80 | len(length)]) + length + body


def _der_int(value: int) -> bytes:
    # One extra byte keeps the sign bit clear: DER integers are signed.
    return _der(0x02, value.to_bytes(value.bit_length() // 8 + 1, "big"))


def _is_dns_label(name: str) -> bool:
    return bool(name) and name.isascii() and all(
        part and len(part) <= 63 and part.replace("-", "").replace("_", "").isalnum() for part in name.split("."))
