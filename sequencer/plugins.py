"""The plugin manager: entry-point discovery, channels, enable/disable persisted in the database."""
from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from datetime import datetime
from importlib import metadata
from typing import TYPE_CHECKING

import pluggy
import sqlalchemy as sa
import sqlalchemy.orm as so

from sequencer import builtin, hookspecs
from sequencer.channels import Channel, ChannelContext, Health
from sequencer.models import PluginState

if TYPE_CHECKING:
    from sequencer.config import Settings

ENTRY_POINT_GROUP = "sequencer.plugins"


class PluginError(Exception):
    """A plugin problem a user can fix; the message says how."""


@dataclass(frozen=True)
class PluginInfo:
    name: str
    version: str
    channels: tuple[str, ...]
    enabled: bool
    health: str


class Plugins:
    """Load every installed plugin and answer which channels can send now."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.pm = pluggy.PluginManager("sequencer")
        self.pm.add_hookspecs(hookspecs)
        self.pm.register(builtin, name="sequencer.builtin")
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
        self._channels.clear()
        # Called per implementation (not through the relay) to know which plugin owns each channel.
        for impl in self.pm.hook.register_channels.get_hookimpls():
            def register(channel: Channel, _owner: str = impl.plugin_name) -> None:
                self._channels[channel.name] = (_owner, channel)

            impl.function(register=register)
        for plugin_name, channel in self._channels.values():
            channel.configure(ChannelContext(
                settings=self.settings.plugin(plugin_name),
                postal_address=self.settings.sending.postal_address,
                base_url=self.settings.web.base_url,
            ))

    def add_plugin(self, plugin: object, name: str, version: str = "0") -> None:
        """Register a plugin object that is not installed as a distribution (tests, embedding)."""
        self.pm.register(plugin, name=name)
        self.pm.check_pending()
        self.versions[name] = version
        self._collect_channels()

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
        """Return installed plugins that are enabled (a plugin with no saved state is enabled)."""
        disabled = set(session.scalars(sa.select(PluginState.name).where(PluginState.enabled.is_(False))))
        return {name for name in self.versions if name not in disabled}

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
