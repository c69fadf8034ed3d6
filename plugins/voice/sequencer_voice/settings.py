"""[plugins.voice] in config.toml -> typed settings, with errors that name the key and the fix."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal, Mapping

from sequencer.channels import e164

SCHEMA = {
    "account_sid": "Twilio Account SID, AC... (required)",
    "auth_token": 'Twilio auth token (required); use { env = "TWILIO_AUTH_TOKEN" } to read it from the environment',
    "numbers": "E.164 numbers we own, the team pool of caller ids (required; reps' own come from `numbers assign`)",
    "api_base_url": 'Twilio REST API base URL (default "https://api.twilio.com"; a compatible provider or a test double)',
    "calls_per_second": "calls the account starts per second, across workers (default 1)",
    "record": "record click-to-call conversations (default false)",
    "record_notice": "the announcement played to both sides before a recorded call (required when record = true)",
    "human_greeting": "what a voicemail drop says when a person answers instead of a machine (required)",
    "on_human": '"callback_task" (default): the lead\'s owner gets a task to call back; "hangup": nothing more',
    "say_language": 'the <Say> language of voicemail drops (default "en-US")',
    "languages": 'the <Say> language by the lead\'s country, e.g. { RU = "ru-RU" }; others use say_language',
}
DEFAULT_API_BASE_URL = "https://api.twilio.com"
ON_HUMAN = ("callback_task", "hangup")


class VoiceConfigError(ValueError):
    """A [plugins.voice] setting is missing or unusable; the message names the key and the fix."""


@dataclass(frozen=True)
class VoiceSettings:
    account_sid: str
    auth_token: str
    numbers: tuple[str, ...]
    api_base_url: str
    calls_per_second: float
    record: bool
    record_notice: str | None
    human_greeting: str
    on_human: Literal["callback_task", "hangup"]
    say_language: str
    languages: Mapping[str, str]

    def language(self, country: str | None) -> str:
        """Return the <Say> language for a lead in this country."""
        return self.languages.get((country or "").upper(), self.say_language)


def read_settings(table: Mapping[str, Any]) -> VoiceSettings:
    """Read [plugins.voice]; raise VoiceConfigError naming the first key that is missing or wrong."""
    def text(key: str, required: bool = True) -> str | None:
        value = table.get(key)
        if value in (None, ""):
            if required:
                raise VoiceConfigError(f"[plugins.voice] {key} is not set; set it in config.toml ({SCHEMA[key]})")
            return None
        if not isinstance(value, str):
            raise VoiceConfigError(f"[plugins.voice] {key} must be a string, not {value!r}")
        return value.strip()

    account_sid, auth_token = text("account_sid"), text("auth_token")
    raw_numbers = table.get("numbers")
    if not raw_numbers:
        raise VoiceConfigError(f"[plugins.voice] numbers is not set; set it in config.toml ({SCHEMA['numbers']})")
    if not isinstance(raw_numbers, list) or not all(isinstance(n, str) for n in raw_numbers):
        raise VoiceConfigError(f"[plugins.voice] numbers must be a list of E.164 strings, not {raw_numbers!r}")
    try:
        numbers = tuple(e164(n) for n in raw_numbers)
    except ValueError as exc:
        raise VoiceConfigError(f"[plugins.voice] numbers: {exc}") from None
    base_url = text("api_base_url", required=False) or DEFAULT_API_BASE_URL
    if not base_url.startswith(("https://", "http://")):
        raise VoiceConfigError(f"[plugins.voice] api_base_url {base_url!r} must start with https://")
    rate = table.get("calls_per_second", 1)
    if isinstance(rate, bool) or not isinstance(rate, (int, float)) or rate <= 0:
        raise VoiceConfigError(f"[plugins.voice] calls_per_second must be a positive number, not {rate!r}")
    record = table.get("record", False)
    if not isinstance(record, bool):
        raise VoiceConfigError(f"[plugins.voice] record must be true or false, not {record!r}")
    notice = text("record_notice", required=record)
    on_human = table.get("on_human", "callback_task")
    if on_human not in ON_HUMAN:
        raise VoiceConfigError(f"[plugins.voice] on_human must be one of {', '.join(ON_HUMAN)}, not {on_human!r}")
    languages = table.get("languages", {})
    if not isinstance(languages, Mapping) or not all(isinstance(v, str) for v in languages.values()):
        raise VoiceConfigError(f'[plugins.voice] languages must map countries to languages, like {{ RU = "ru-RU" }}, '
                               f"not {languages!r}")
    greeting = text("human_greeting")
    assert account_sid is not None and auth_token is not None and greeting is not None
    return VoiceSettings(account_sid=account_sid, auth_token=auth_token, numbers=numbers,
                         api_base_url=base_url.rstrip("/"), calls_per_second=float(rate), record=record,
                         record_notice=notice, human_greeting=greeting, on_human=on_human,
                         say_language=text("say_language", required=False) or "en-US",
                         languages={k.upper(): v for k, v in languages.items()})
