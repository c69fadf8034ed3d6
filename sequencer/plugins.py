"""The plugin manager: entry-point discovery, channels, enable/disable persisted in the database."""
from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from datetime import datetime
from importlib import metadata
from typing import TYPE_CHECKING, Callable

import pluggy
import sqlalchemy as sa
import sqlalchemy.orm as so

from sequencer import builtin, hookspecs
from sequencer.channels import Channel, ChannelContext, Core, Health
from sequencer.models import PluginState

if TYPE_CHECKING:
    from sequencer.config import Settings
    from sequencer.runtime import Runtime

ENTRY_POINT_GROUP = "sequencer.plugins"
# Sequencer's own defaults, registered as an ordinary plugin; it cannot be disabled.
BUILTIN = "sequencer.builtin"


class PluginError(Exception):
    """A plugin problem a user can fix; the message says how."""


@dataclass(frozen=True)
class PluginJob:
    """Periodic work a plugin registered with register_jobs."""

    plugin: str
    name: str
    function: Callable[[Core], None]
    interval_seconds: float

    @property
    def id(self) -> str:
        return f"plugin:{self.plugin}:{self.name}"


@dataclass(frozen=True)
class PluginInfo:
    name: str
    version: str
    channels: tuple[str, ...]
    enabled: bool
    health: str


class Plugins:
    """Load every installed plugin and answer which channels can send now."""

    def __init__(self, settings: Settings, runtime: Runtime | None = None) -> None:
        self.settings = settings
        # The database and clock behind each plugin's Core; None when only commands are discovered.
        self.runtime = runtime
        self._cores: dict[str, Core] = {}
        self.pm = pluggy.PluginManager("sequencer")
        self.pm.add_hookspecs(hookspecs)
        self.pm.register(builtin, name=BUILTIN)
        self._load()
        self.pm.check_pending()
        if os.environ.get("SEQUENCER_TRACE_PLUGINS"):
            self.pm.add_hookcall_monitoring(
                lambda name, impls, kw: print(f"hook {name} -> {[i.plugin_name for i in impls]}", file=sys.stderr),
                lambda outcome, name, impls, kw: None,
            )
        self._channels: dict[str, tuple[str, Channel]] = {}
        self._collect_channels()

    def _collect_channels(self) -> None:
        """Ask every plugin for its channels, then configure each with its plugin's settings and Core.

        A channel registered from a `trylast` implementation (the built-in manual-only sms, voice
        and task) is a default: a plugin that registers the same name replaces it, provided it
        keeps the default's compliance declarations at least as strict. Two plugins registering
        one name at the same rank is a conflict that only a person can settle.
        """
        # Per rank (True: trylast defaults), channel name -> (owner plugin, channel).
        ranks: dict[bool, dict[str, tuple[str, Channel]]] = {True: {}, False: {}}
        # Called per implementation (not through the relay) to know which plugin owns each channel.
        for impl in self.pm.hook.register_channels.get_hookimpls():
            def register(channel: Channel, _owner: str = impl.plugin_name, _rank: bool = impl.trylast) -> None:
                previous = ranks[_rank].get(channel.name)
                if previous is not None and previous[0] != _owner:
                    raise PluginError(
                        f"channel '{channel.name}' is registered by both plugins {previous[0]} and {_owner}; "
                        f"uninstall one, or load only one with SEQUENCER_LOAD_PLUGINS")
                ranks[_rank][channel.name] = (_owner, channel)

            impl.function(register=register)
        for name, (owner, channel) in ranks[False].items():
            if name in ranks[True]:
                _check_replacement(ranks[True][name][1], owner, channel)
        self._channels = {**ranks[True], **ranks[False]}
        for plugin_name, channel in self._channels.values():
            channel.configure(ChannelContext(
                settings=self.settings.plugin(plugin_name),
                postal_address=self.settings.sending.postal_address,
                base_url=self.settings.web.base_url,
                core=self.core(plugin_name) if self.runtime is not None else None,
            ))

    def core(self, plugin: str) -> Core:
        """Return the Core a plugin reports through (one per plugin, holding its [plugins.NAME] settings)."""
        if self.runtime is None:
            raise PluginError(f"plugin {plugin} asked for the core of a plugin manager built without a database; "
                              "build it through a Runtime (runtime.plugins)")
        if plugin not in self._cores:
            from sequencer.receiving import PluginCore

            self._cores[plugin] = PluginCore(self.runtime, plugin)
        return self._cores[plugin]

    def jobs(self) -> list[PluginJob]:
        """Return the periodic work every plugin registered with register_jobs."""
        jobs: dict[str, PluginJob] = {}
        for impl in self.pm.hook.register_jobs.get_hookimpls():
            def register(name: str, function: Callable[[Core], None], interval_seconds: float,
                         _owner: str = impl.plugin_name) -> None:
                job = PluginJob(_owner, name, function, interval_seconds)
                if not callable(function):
                    raise PluginError(f"plugin {_owner} registered job '{name}' with {function!r}, which is not "
                                      "callable; pass a function that takes the plugin's Core")
                if not isinstance(interval_seconds, (int, float)) or interval_seconds <= 0:
                    raise PluginError(f"plugin {_owner} registered job '{name}' every {interval_seconds!r} seconds; "
                                      "the interval must be a positive number of seconds")
                if job.id in jobs:
                    raise PluginError(f"plugin {_owner} registered two jobs named '{name}'; give each its own name")
                jobs[job.id] = job

            impl.function(register=register)
        return list(jobs.values())

    def add_plugin(self, plugin: object, name: str, version: str = "0") -> None:
        """Register a plugin object that is not installed as a distribution (tests, embedding)."""
        self.pm.register(plugin, name=name)
        try:
            self.pm.check_pending()
            self._collect_channels()
        except Exception:
            # Leave the manager as it was: the plugin's channels or hooks are unusable.
            self.pm.unregister(name=name)
            self._collect_channels()
            raise
        self.versions[name] = version

    def remove_plugin(self, name: str) -> None:
        self.pm.unregister(name=name)
        self.versions.pop(name, None)
        self._collect_channels()

    def _load(self) -> None:
        # SEQUENCER_LOAD_PLUGINS=email,sms limits which installed plugins load (debugging).
        only = os.environ.get("SEQUENCER_LOAD_PLUGINS")
        allowed = None if only is None else {n.strip() for n in only.split(",") if n.strip()}
        self.versions: dict[str, str] = {}
        for ep in metadata.entry_points(group=ENTRY_POINT_GROUP):
            if allowed is not None and ep.name not in allowed:
                continue
            if self.pm.get_plugin(ep.name) is not None:
                continue
            self.pm.register(ep.load(), name=ep.name)
            self.versions[ep.name] = ep.dist.version if ep.dist else "?"

    @property
    def hook(self) -> pluggy.HookRelay:
        return self.pm.hook

    def names(self) -> list[str]:
        return sorted(self.versions)

    def channel(self, name: str) -> Channel | None:
        entry = self._channels.get(name)
        return entry[1] if entry else None

    def channel_plugin(self, channel: str) -> str | None:
        entry = self._channels.get(channel)
        return entry[0] if entry else None

    def enabled_plugins(self, session: so.Session) -> set[str]:
        """Return installed plugins that are enabled (a plugin with no saved state is enabled), and the built-in."""
        disabled = set(session.scalars(sa.select(PluginState.name).where(PluginState.enabled.is_(False))))
        return {name for name in self.versions if name not in disabled} | {BUILTIN}

    def channel_status(self, session: so.Session) -> dict[str, str | None]:
        """Map every known channel to None when it can send now, else the reason it cannot."""
        enabled = self.enabled_plugins(session)
        status: dict[str, str | None] = {}
        for channel_name, (plugin_name, channel) in self._channels.items():
            if plugin_name not in enabled:
                status[channel_name] = f"plugin {plugin_name} is disabled; run `sequencer plugins enable {plugin_name}`"
            else:
                status[channel_name] = channel.unavailable_reason()
        return status

    def set_enabled(self, session: so.Session, name: str, enabled: bool, now: datetime) -> None:
        if name not in self.versions:
            known = ", ".join(self.names()) or "none"
            raise PluginError(f"no plugin named '{name}' is installed (installed: {known})")
        state = session.get(PluginState, name)
        if state is None:
            session.add(PluginState(name=name, enabled=enabled, settings={}, updated_at=now))
        else:
            state.enabled, state.updated_at = enabled, now

    def info(self, session: so.Session) -> list[PluginInfo]:
        enabled = self.enabled_plugins(session)
        result = []
        for name in self.names():
            channels = tuple(sorted(c for c, (p, _) in self._channels.items() if p == name))
            healths = [self._channels[c][1].health() for c in channels] or [Health(True, "ok")]
            health = "; ".join(h.detail for h in healths if not h.ok) or "ok"
            result.append(PluginInfo(name, self.versions[name], channels, name in enabled, health))
        return result


# Consent scopes from the loosest to the strictest.
_SCOPES = ("none", "automatic", "all")


def _check_replacement(default: Channel, owner: str, channel: Channel) -> None:
    """Refuse a plugin channel that would loosen what the built-in declaration of that name enforces.

    The built-in sms and voice declarations carry COMPLIANCE.md rules 8 and 9 (contact hours,
    consent); a plugin that sends on those channels must not silently drop them.
    """
    where = f"plugin {owner}: channel '{channel.name}'"
    if channel.address_kind != default.address_kind:
        raise PluginError(f"{where} declares address_kind = {channel.address_kind!r}, but steps on "
                          f"'{channel.name}' go to the lead's {default.address_kind}; declare "
                          f"address_kind = {default.address_kind!r}")
    if _SCOPES.index(channel.requires_consent) < _SCOPES.index(default.requires_consent):
        raise PluginError(f"{where} declares requires_consent = {channel.requires_consent!r}, looser than the "
                          f"built-in {default.requires_consent!r} (COMPLIANCE.md rule 9); declare "
                          f"requires_consent = {default.requires_consent!r} or stricter")
    if default.contact_hours and not channel.contact_hours:
        raise PluginError(f"{where} declares contact_hours = False, but texts and calls keep to [contact_hours] "
                          "(COMPLIANCE.md rule 8); declare contact_hours = True")
