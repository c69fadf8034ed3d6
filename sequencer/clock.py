"""Clocks: the application's idea of "now", fixed or advancing for --now and tests."""
from __future__ import annotations

import time
from datetime import datetime, timedelta, timezone
from typing import Protocol


class Clock(Protocol):
    def now(self) -> datetime:
        """Return the current instant, timezone-aware UTC."""


class SystemClock:
    def now(self) -> datetime:
        return datetime.now(timezone.utc)


class FixedClock:
    """A clock stopped at one instant; `advance` moves it (tests, one-shot --now commands)."""

    def __init__(self, at: datetime) -> None:
        self.at = as_utc(at)

    def now(self) -> datetime:
        return self.at

    def advance(self, delta: timedelta) -> None:
        self.at += delta

    def set(self, at: datetime) -> None:
        self.at = as_utc(at)


class OffsetClock:
    """A clock that starts at a given instant and advances in real time (--now for worker/serve)."""

    def __init__(self, start: datetime) -> None:
        self.start = as_utc(start)
        self._t0 = time.monotonic()

    def now(self) -> datetime:
        return self.start + timedelta(seconds=time.monotonic() - self._t0)


def as_utc(at: datetime) -> datetime:
    """Return `at` in UTC; naive datetimes are refused because their zone is a guess."""
    if at.tzinfo is None or at.utcoffset() is None:
        raise ValueError(f"{at.isoformat()} has no time zone; give it a Z or an offset like +02:00")
    return at.astimezone(timezone.utc)


def parse_instant(text: str) -> datetime:
    """Parse an ISO 8601 instant that must carry Z or an offset."""
    try:
        at = datetime.fromisoformat(text.strip().replace("z", "Z"))
    except ValueError:
        raise ValueError(f"'{text}' is not an ISO 8601 instant; write it like 2026-03-02T09:00:00Z") from None
    return as_utc(at)


def iso_z(at: datetime | None) -> str | None:
    """Format an instant as ISO 8601 UTC with a Z, as every JSON output does."""
    if at is None:
        return None
    return as_utc(at).isoformat().replace("+00:00", "Z")
