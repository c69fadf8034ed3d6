"""[plugins.sms] in config.toml -> typed settings, with errors that name the key and the fix."""
from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any, Mapping

from sequencer.channels import e164

SCHEMA = {
    "account_sid": "Twilio Account SID, AC... (required)",
    "auth_token": 'Twilio auth token (required); use { env = "TWILIO_AUTH_TOKEN" } to read it from the environment',
    "numbers": "E.164 numbers we own: the team pool and every number inbound texts may arrive on",
    "messaging_service_sid": "Twilio Messaging Service SID, MG..., to send through instead of the numbers",
    "api_base_url": 'Twilio REST API base URL (default "https://api.twilio.com"; a compatible provider or a test double)',
    "max_segments": "the most segments a rendered text may take (default 4)",
    "per_number_per_second": "texts per second from one number, across workers (default 1)",
    "per_number_daily_cap": "texts a day from one number, across workers, per UTC day (default 500)",
    "help_text": "the answer to HELP and INFO (required)",
    "concurrent_requests": "requests to Twilio a worker keeps in flight at once (default 4; 1 sends one by one)",
}
DEFAULT_API_BASE_URL = "https://api.twilio.com"


class SmsConfigError(ValueError):
    """A [plugins.sms] setting is missing or unusable; the message names the key and the fix."""


@dataclass(frozen=True)
class SmsSettings:
    account_sid: str
    auth_token: str
    numbers: tuple[str, ...]
    messaging_service_sid: str | None
    api_base_url: str
    max_segments: int
    per_number_per_second: float
    per_number_daily_cap: int
    help_text: str
    # Each request to Twilio's API waits for an answer (tens to hundreds of milliseconds over the
    # internet), so a worker sending one text at a time is held to a few texts a second.
    concurrent_requests: int = 4


_last_read: tuple[dict[str, Any], SmsSettings] | None = None


def read_settings(table: Mapping[str, Any]) -> SmsSettings:
    """Read [plugins.sms]; raise SmsConfigError naming the first key that is missing or wrong.

    Remembered while the table stays the same: every webhook and every group of texts needs it,
    and checking the numbers as E.164 each time cost more than a webhook's signature check.
    """
    global _last_read
    if _last_read is None or _last_read[0] != table:
        _last_read = (copy.deepcopy(dict(table)), _parse(table))
    return _last_read[1]


def _parse(table: Mapping[str, Any]) -> SmsSettings:
    def text(key: str, required: bool = True) -> str | None:
        value = table.get(key)
        if value in (None, ""):
            if required:
                raise SmsConfigError(f"[plugins.sms] {key} is not set; set it in config.toml ({SCHEMA[key]})")
            return None
        if not isinstance(value, str):
            raise SmsConfigError(f"[plugins.sms] {key} must be a string, not {value!r}")
        return value.strip()

    account_sid, auth_token, help_text = text("account_sid"), text("auth_token"), text("help_text")
    service = text("messaging_service_sid", required=False)
    raw_numbers = table.get("numbers", [])
    if not isinstance(raw_numbers, list) or not all(isinstance(n, str) for n in raw_numbers):
        raise SmsConfigError(f"[plugins.sms] numbers must be a list of E.164 strings, not {raw_numbers!r}")
    try:
        numbers = tuple(e164(n) for n in raw_numbers)
    except ValueError as exc:
        raise SmsConfigError(f"[plugins.sms] numbers: {exc}") from None
    if not numbers and not service:
        raise SmsConfigError("[plugins.sms] has neither numbers nor messaging_service_sid; set numbers = "
                             '["+14155550100"] (the numbers we own) or messaging_service_sid = "MG..."')
    base_url = text("api_base_url", required=False) or DEFAULT_API_BASE_URL
    if not base_url.startswith(("https://", "http://")):
        raise SmsConfigError(f"[plugins.sms] api_base_url {base_url!r} must start with https://")
    assert account_sid is not None and auth_token is not None and help_text is not None
    return SmsSettings(account_sid=account_sid, auth_token=auth_token, numbers=numbers, messaging_service_sid=service,
                       api_base_url=base_url.rstrip("/"), max_segments=max_segments(table),
                       per_number_per_second=_positive(table, "per_number_per_second", 1, float),
                       per_number_daily_cap=_positive(table, "per_number_daily_cap", 500, int), help_text=help_text,
                       concurrent_requests=_positive(table, "concurrent_requests", 4, int))


def max_segments(table: Mapping[str, Any]) -> int:
    """Read [plugins.sms] max_segments alone: `cadence apply` checks texts against it without credentials."""
    return _positive(table, "max_segments", 4, int)


def _positive(table: Mapping[str, Any], key: str, default: float, kind: type) -> Any:
    value = table.get(key, default)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0 \
            or (kind is int and value != int(value)):
        raise SmsConfigError(f"[plugins.sms] {key} must be a positive {'whole ' if kind is int else ''}number, "
                             f"not {value!r}")
    return kind(value)
