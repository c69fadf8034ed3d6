"""config.toml -> a typed Settings object, with env overrides and secrets from the environment."""
from __future__ import annotations

import dataclasses
import ipaddress
import os
import tomllib
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from sequencer.calendar import ContactHours

DEFAULT_OUTCOMES = [
    "connected",
    "left_voicemail",
    "no_answer",
    "busy",
    "gatekeeper",
    "wrong_number",
    "not_interested",
    "call_back_later",
    "meeting_booked",
]
# The outcomes in which the rep spoke with the lead: `calls stats` counts them as connects.
DEFAULT_CONNECTED_OUTCOMES = ["connected", "not_interested", "call_back_later", "meeting_booked"]


# COMPLIANCE.md rule 10: the CTIA words, and their Russian equivalents.
DEFAULT_OPT_OUT_KEYWORDS = ["STOP", "STOPALL", "UNSUBSCRIBE", "CANCEL", "END", "QUIT", "REVOKE", "OPTOUT",
                            "СТОП", "ОТПИСАТЬСЯ"]


class ConfigError(Exception):
    """The configuration cannot be used; the message names the key, the file and the fix."""


class ConfigWarning(UserWarning):
    """A configuration key that Sequencer does not know (usually a typo)."""


@dataclass
class DatabaseSettings:
    url: str


# The key demo/config.toml ships with: published, so anyone could sign with it.
DEMO_SECRET_KEY = "demo-secret-key-not-for-production"
MIN_SECRET_BYTES = 32
GENERATE_SECRET = "python -c 'import secrets; print(secrets.token_urlsafe(48))'"


@dataclass
class WebSettings:
    base_url: str
    # [web] secret_key, read through `secret_key`. None when the file names no key, or an
    # environment variable that is not set here: commands that sign nothing (db upgrade,
    # leads import...) run without it, and the ones that sign say what to set.
    signing_key: str | None = field(default=None, repr=False)
    signing_key_missing: str = "[web] secret_key is not set"

    @property
    def secret_key(self) -> str:
        """Return the key that signs unsubscribe links and sessions; raise ConfigError when there is none."""
        if self.signing_key is None:
            raise ConfigError(self.signing_key_missing)
        return self.signing_key


@dataclass
class SendingSettings:
    postal_address: str | None = None
    max_touches_per_lead_per_day: int = 3
    default_daily_cap: int = 200
    # Emails per recipient domain per hour across all mailboxes (0: no limit), so that one
    # large provider does not see a burst from us.
    max_per_recipient_domain_per_hour: int = 0


@dataclass
class LeadsSettings:
    default_region: str | None = None


@dataclass
class TasksSettings:
    outcomes: list[str] = field(default_factory=lambda: list(DEFAULT_OUTCOMES))
    connected_outcomes: list[str] = field(default_factory=lambda: list(DEFAULT_CONNECTED_OUTCOMES))

    def __post_init__(self) -> None:
        for key in ("outcomes", "connected_outcomes"):
            values = getattr(self, key)
            if not isinstance(values, list) or not all(isinstance(v, str) and v.strip() for v in values):
                raise ConfigError(f'[tasks] {key} must be a list of words, like {key} = ["connected"];'
                                  f" it is {values!r}")
        unknown = [o for o in self.connected_outcomes if o not in self.outcomes]
        if unknown:
            raise ConfigError(f"[tasks] connected_outcomes lists {', '.join(map(repr, unknown))}, which [tasks]"
                              " outcomes does not; add it to outcomes or remove it from connected_outcomes")


@dataclass
class InboundSettings:
    # An out-of-office with no readable return date pauses the lead this many days (0: not at all).
    out_of_office_default_days: int = 3
    # Whole-message keywords of texts (COMPLIANCE.md rule 10), matched in any letter case with
    # surrounding spaces ignored. Add the words of every language the deployment writes in.
    opt_out_keywords: list[str] = field(default_factory=lambda: list(DEFAULT_OPT_OUT_KEYWORDS))
    # Count only from an address that is opted out; from anyone else they are replies.
    opt_in_keywords: list[str] = field(default_factory=lambda: ["START", "YES", "UNSTOP"])
    help_keywords: list[str] = field(default_factory=lambda: ["HELP", "INFO"])

    def __post_init__(self) -> None:
        for key in ("opt_out_keywords", "opt_in_keywords", "help_keywords"):
            words = getattr(self, key)
            if not isinstance(words, list) or not all(isinstance(w, str) and w.strip() for w in words):
                raise ConfigError(f"[inbound] {key} must be a list of words, like {key} = [\"STOP\", \"СТОП\"]; "
                                  f"it is {words!r}")


@dataclass
class EngineSettings:
    tick_seconds: float = 5.0
    batch_size: int = 500
    lease_seconds: float = 120.0
    retry_base_seconds: float = 300.0
    max_attempts: int = 5
    # Touches a worker has handed to providers without recording their answers: all a kill -9
    # can leave `unknown` for a person to resolve.
    max_in_flight: int = 50


@dataclass
class ContactHoursSettings:
    # Local time of the lead for calls and texts (COMPLIANCE.md rule 8); checked at start-up.
    start: str = "08:00"
    end: str = "21:00"
    allow_wider_than_tcpa: bool = False

    def hours(self) -> ContactHours:
        """Return the hours; raise ValueError naming the key when they are unusable."""
        if not isinstance(self.allow_wider_than_tcpa, bool):
            raise ValueError(f"contact_hours.allow_wider_than_tcpa {self.allow_wider_than_tcpa!r} must be"
                             " true or false")
        return ContactHours.parse(self.start, self.end, allow_wider_than_tcpa=self.allow_wider_than_tcpa)


@dataclass
class Settings:
    path: Path
    database: DatabaseSettings
    web: WebSettings
    sending: SendingSettings = field(default_factory=SendingSettings)
    leads: LeadsSettings = field(default_factory=LeadsSettings)
    tasks: TasksSettings = field(default_factory=TasksSettings)
    engine: EngineSettings = field(default_factory=EngineSettings)
    inbound: InboundSettings = field(default_factory=InboundSettings)
    contact_hours: ContactHoursSettings = field(default_factory=ContactHoursSettings)
    templates_dir: Path | None = None
    plugins: dict[str, dict[str, Any]] = field(default_factory=dict)

    def plugin(self, name: str) -> dict[str, Any]:
        """Return the [plugins.NAME] table, secrets resolved."""
        return self.plugins.get(name, {})


# Keys that moved from a core section to a plugin's table: (section, key) -> (plugin, key).
_MOVED = {("web", "inbound_secret"): ("email", "inbound_secret")}
# section -> (dataclass, keys that must be present)
_SECTIONS: dict[str, tuple[type, tuple[str, ...]]] = {
    "database": (DatabaseSettings, ("url",)),
    "web": (WebSettings, ("base_url",)),
    "sending": (SendingSettings, ()),
    "leads": (LeadsSettings, ()),
    "tasks": (TasksSettings, ()),
    "engine": (EngineSettings, ()),
    "inbound": (InboundSettings, ()),
    "contact_hours": (ContactHoursSettings, ()),
}
_TOP_LEVEL = {"templates_dir", "plugins"}
# Read on their own after the sections, so that only the commands that use them need them.
_READ_WHEN_USED = {("web", "secret_key")}


def load_settings(path: str | os.PathLike[str] | None = None, *, overrides: dict[str, Any] | None = None) -> Settings:
    """Read the config file (SEQUENCER_CONFIG, else ./config.toml) into Settings."""
    path = Path(path or os.environ.get("SEQUENCER_CONFIG") or "config.toml").resolve()
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such config file; pass --config PATH or set SEQUENCER_CONFIG") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML ({exc})") from None
    for section, values in (overrides or {}).items():
        raw.setdefault(section, {}).update(values)
    if os.environ.get("SEQUENCER_DATABASE_URL"):
        raw.setdefault("database", {})["url"] = os.environ["SEQUENCER_DATABASE_URL"]
    return _build(path, raw)


def _build(path: Path, raw: dict[str, Any]) -> Settings:
    for key in raw:
        if key not in _SECTIONS and key not in _TOP_LEVEL:
            warnings.warn(f"{path}: unknown section or key [{key}] is ignored", ConfigWarning, stacklevel=3)
    built: dict[str, Any] = {}
    for section, (cls, required) in _SECTIONS.items():
        table = raw.get(section, {})
        if not isinstance(table, dict):
            raise ConfigError(f"{path}: [{section}] must be a table")
        known = {f.name: f for f in dataclasses.fields(cls)}
        values = {}
        for key, value in table.items():
            if (section, key) in _READ_WHEN_USED or (section, key) in _MOVED:
                continue
            if key not in known:
                warnings.warn(f"{path}: unknown key {section}.{key} is ignored", ConfigWarning, stacklevel=3)
                continue
            values[key] = resolve_secret(value, f"{section}.{key}", path)
        for key in required:
            if values.get(key) in (None, ""):
                raise ConfigError(f"{path}: required key {section}.{key} is missing; set it in [{section}]")
        try:
            built[section] = cls(**values)
        except ConfigError as exc:  # a section's own check: say which file
            raise ConfigError(f"{path}: {exc}") from None
    built["database"].url = _resolve_sqlite_path(built["database"].url, path.parent)
    built["web"].signing_key, built["web"].signing_key_missing = _signing_key(raw.get("web", {}), path)
    try:
        built["contact_hours"].hours()
    except ValueError as exc:
        raise ConfigError(f"{path}: {exc}") from None
    templates_dir = raw.get("templates_dir", "templates")
    plugins = {
        name: {k: resolve_secret(v, f"plugins.{name}.{k}", path) for k, v in table.items()}
        for name, table in raw.get("plugins", {}).items()
    }
    _read_moved_keys(raw, plugins, path)
    return Settings(path=path, templates_dir=(path.parent / templates_dir).resolve(), plugins=plugins, **built)


def _read_moved_keys(raw: dict[str, Any], plugins: dict[str, dict[str, Any]], path: Path) -> None:
    """Read keys that moved to a plugin's table from their old place, warning with the new name."""
    for (section, key), (plugin, new_key) in _MOVED.items():
        if key not in raw.get(section, {}):
            continue
        warnings.warn(f"{path}: [{section}] {key} is deprecated; move it to [plugins.{plugin}] {new_key}",
                      DeprecationWarning, stacklevel=4)
        # The new place wins when both are set.
        plugins.setdefault(plugin, {}).setdefault(new_key, resolve_secret(raw[section][key], f"{section}.{key}", path))


def resolve_secret(value: Any, key: str, path: Path) -> Any:
    """Resolve `{ env = "VAR" }` to the variable's value so secrets stay out of the file."""
    if isinstance(value, dict) and set(value) == {"env"}:
        var = value["env"]
        if var not in os.environ:
            raise ConfigError(f"{path}: {key} reads the environment variable {var}, which is not set; export {var}")
        return os.environ[var]
    return value


def _signing_key(web: dict[str, Any], path: Path) -> tuple[str | None, str]:
    """Return [web] secret_key, or None and what to do about it."""
    fix = (f'set secret_key = {{ env = "SEQUENCER_SECRET_KEY" }} in [web] and export '
           f"SEQUENCER_SECRET_KEY=$({GENERATE_SECRET})")
    value = web.get("secret_key")
    if isinstance(value, dict) and set(value) == {"env"} and value["env"] not in os.environ:
        var = value["env"]
        return None, (f"{path}: web.secret_key reads the environment variable {var}, which is not set; "
                      f"export {var}=$({GENERATE_SECRET}) where Sequencer runs (it signs unsubscribe links "
                      "and sessions; keep the same key once mail is out)")
    value = resolve_secret(value, "web.secret_key", path)
    if value in (None, ""):
        return None, f"{path}: required key web.secret_key is missing; {fix}"
    if not isinstance(value, str):
        return None, f"{path}: web.secret_key must be a string; {fix}"
    return value, ""


def check_secret_for_serving(settings: Settings) -> None:
    """Refuse to serve or send with the demo key or a short one, unless base_url is on this machine.

    The key signs unsubscribe links and sessions: with a published or guessable one anyone
    can forge them. On localhost only the local user can reach the links, so demos may use it.
    Raise ConfigError naming the key, the file and the fix.
    """
    key = settings.web.secret_key
    if key == DEMO_SECRET_KEY:
        problem = "is the demo key from demo/config.toml, which is published with Sequencer"
    elif len(key.encode("utf-8")) < MIN_SECRET_BYTES:
        problem = f"is {len(key.encode('utf-8'))} bytes long; it needs at least {MIN_SECRET_BYTES} random bytes"
    else:
        return
    if is_this_machine(settings.web.base_url):
        return
    raise ConfigError(
        f"{settings.path}: [web] secret_key {problem}, and [web] base_url {settings.web.base_url} is not on this "
        f"machine, so anyone could forge unsubscribe links and sessions. Fix: export "
        f"SEQUENCER_SECRET_KEY=$({GENERATE_SECRET}) and set secret_key = {{ env = \"SEQUENCER_SECRET_KEY\" }} in "
        "[web] (before the first send: a new key breaks the unsubscribe links of mail already sent)"
    )


def is_this_machine(url: str) -> bool:
    """Tell whether a URL's host is this machine: localhost (RFC 6761), 127.0.0.0/8 or ::1."""
    host = (urlsplit(url).hostname or "").rstrip(".").lower()
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _resolve_sqlite_path(url: str, base: Path) -> str:
    """Make a relative SQLite path relative to the config file, so the cwd does not matter."""
    prefix = "sqlite:///"
    if url.startswith(prefix) and not url.startswith(prefix + "/") and url != "sqlite:///:memory:":
        db_path = (base / url[len(prefix):]).resolve()
        db_path.parent.mkdir(parents=True, exist_ok=True)
        return prefix + str(db_path)
    return url
