"""Sending windows, time zones, waits, business days and holidays.

Everything here is pure: no database, no clock, no I/O. Every instant that goes in
or comes out is a timezone-aware datetime in UTC; local wall time exists only inside.
"""
from __future__ import annotations

import datetime as dt
import functools
import math
import re
import warnings
from dataclasses import dataclass, field
from typing import ClassVar, Sequence
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import holidays

__all__ = [
    "TCPA_HOURS",
    "WEEKDAYS",
    "ContactHours",
    "LocalCalendar",
    "NoContactHours",
    "NoOpening",
    "Wait",
    "Window",
    "in_contact_hours",
    "local_day_bounds",
    "next_contact_opening",
    "next_phone_opening",
]

WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")

UTC = dt.timezone.utc
MIDNIGHT = dt.time(0, 0)
SEARCH_HORIZON = dt.timedelta(days=3 * 366)
# No zone is further than this from UTC (the extremes are -12:00 and +14:00), so the
# instants whose wall time falls on a given local date lie within this margin of it.
_MAX_OFFSET = dt.timedelta(hours=15)

_TIME_RE = re.compile(r"(\d{1,2}):(\d{2})")
_WAIT_RE = re.compile(
    r"(?P<amount>\d+)\s*(?P<unit>d|days?|business\s+days?|h|hours?)",
    re.IGNORECASE,
)
_WAIT_FORMS = "'3d', '3 days', '1 day', '2 business days', '1 business day', '4h', '4 hours', '1 hour'"


class NoOpening(ValueError):
    """Raised when a sending window never opens within the search horizon."""


def _require_aware(value: dt.datetime, name: str) -> dt.datetime:
    """Return `value` converted to UTC, refusing naive datetimes."""
    if not isinstance(value, dt.datetime):
        raise TypeError(f"{name} must be a datetime, got {value!r}")
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError(f"{name} {value.isoformat()} is naive; pass a timezone-aware UTC datetime")
    return value.astimezone(UTC)


def _zone(name: str) -> ZoneInfo:
    """Return the ZoneInfo for an IANA name, with an error that names it."""
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, TypeError):
        raise ValueError(
            f"time zone {name!r} is unknown; use an IANA name such as 'Europe/Berlin'"
        ) from None


@functools.lru_cache(maxsize=None)
def _holidays(country: str, year: int) -> frozenset[dt.date]:
    """Return the public holidays of `country` in `year`."""
    try:
        with warnings.catch_warnings():
            # Lunar-calendar holidays (e.g. India's) are tabulated only a few years ahead;
            # the rest of the year is still known, and searching ahead must not warn.
            warnings.filterwarnings("ignore", "Requested Holidays are available only", UserWarning)
            return frozenset(holidays.country_holidays(country, years=year))
    except NotImplementedError:
        raise ValueError(
            f"holiday country {country!r} is not supported; use an ISO 3166-1 alpha-2 code"
            " such as 'US', 'GB' or 'DE', or none for no holidays"
        ) from None


def _parse_time(text: str, what: str, *, allow_24: bool) -> dt.time:
    """Parse "HH:MM" into a time; "24:00" becomes midnight when allowed. `what` names the setting."""
    match = _TIME_RE.fullmatch(text.strip()) if isinstance(text, str) else None
    expected = "HH:MM between 00:00 and " + ("24:00" if allow_24 else "23:59")
    if match is None:
        raise ValueError(f"{what} {text!r} is not a time; expected {expected}")
    hour, minute = int(match[1]), int(match[2])
    if allow_24 and (hour, minute) == (24, 0):
        return MIDNIGHT
    if hour > 23 or minute > 59:
        raise ValueError(f"{what} {text!r} is out of range; expected {expected}")
    return dt.time(hour, minute)


@dataclass(frozen=True)
class Window:
    """Local wall-clock hours on given weekdays; start inclusive, end exclusive."""

    days: frozenset[int]
    start: dt.time
    end: dt.time
    ALWAYS: ClassVar[Window]

    def __post_init__(self) -> None:
        object.__setattr__(self, "days", frozenset(self.days))
        bad_days = sorted(d for d in self.days if d not in range(7))
        if bad_days:
            raise ValueError(f"window days {bad_days} are invalid; expected 0 (Monday) to 6 (Sunday)")
        if self.start.tzinfo is not None or self.end.tzinfo is not None:
            raise ValueError("window start and end are local wall times and must not carry a tzinfo")
        if self.end != MIDNIGHT and self.start >= self.end:
            raise ValueError(
                f"window {self.start:%H:%M}-{self.end:%H:%M} is empty; the start must be"
                " before the end (use 24:00 for the end of the day)"
            )

    @classmethod
    def parse(cls, days: list[str], start: str, end: str) -> Window:
        """Build a window from day names ("mon".."sun") and "HH:MM" times."""
        if isinstance(days, str) or not days:
            raise ValueError(f"window days {days!r} must be a non-empty list of {', '.join(WEEKDAYS)}")
        numbers = set()
        for name in days:
            key = name.strip().lower() if isinstance(name, str) else name
            if key not in WEEKDAYS:
                raise ValueError(f"window day {name!r} is not a weekday; expected one of {', '.join(WEEKDAYS)}")
            numbers.add(WEEKDAYS.index(key))
        return cls(
            frozenset(numbers),
            _parse_time(start, "window start", allow_24=False),
            _parse_time(end, "window end", allow_24=True),
        )

    def contains_time(self, t: dt.time) -> bool:
        """Tell whether a local time of day falls inside the window hours."""
        return self.start <= t and (self.end == MIDNIGHT or t < self.end)

    def __str__(self) -> str:
        days = ",".join(WEEKDAYS[d] for d in sorted(self.days)) or "no days"
        end = "24:00" if self.end == MIDNIGHT else f"{self.end:%H:%M}"
        return f"{days} {self.start:%H:%M}-{end}"


Window.ALWAYS = Window(frozenset(range(7)), MIDNIGHT, MIDNIGHT)


@dataclass(frozen=True)
class Wait:
    """A delay between two steps: calendar days, business days or hours."""

    amount: int
    unit: str

    UNITS: ClassVar[tuple[str, ...]] = ("days", "business_days", "hours")

    def __post_init__(self) -> None:
        if self.unit not in self.UNITS:
            raise ValueError(f"wait unit {self.unit!r} is unknown; expected one of {', '.join(self.UNITS)}")
        if isinstance(self.amount, bool) or not isinstance(self.amount, int) or self.amount < 0:
            raise ValueError(f"wait amount {self.amount!r} must be a whole number of at least 0")

    @classmethod
    def parse(cls, text: str) -> Wait:
        """Parse "3d", "2 business days", "4h" and their spelled-out forms."""
        match = _WAIT_RE.fullmatch(" ".join(text.split())) if isinstance(text, str) else None
        if match is None:
            raise ValueError(f"wait {text!r} is not understood; expected a form like {_WAIT_FORMS}")
        unit = match["unit"].lower()
        if unit.startswith("business"):
            unit = "business_days"
        elif unit.startswith("d"):
            unit = "days"
        else:
            unit = "hours"
        return cls(int(match["amount"]), unit)

    def __str__(self) -> str:
        if self.unit == "days":
            return f"{self.amount}d"
        if self.unit == "hours":
            return f"{self.amount}h"
        return f"{self.amount} business day" + ("" if self.amount == 1 else "s")


def _offset_at(ts: int, zone: ZoneInfo) -> dt.timedelta:
    """Return the zone's UTC offset at a POSIX timestamp."""
    offset = dt.datetime.fromtimestamp(ts, zone).utcoffset()
    assert offset is not None
    return offset


def _offset_segments(
    zone: ZoneInfo, lo: dt.datetime, hi: dt.datetime
) -> list[tuple[dt.datetime, dt.datetime, dt.timedelta]]:
    """Split [lo, hi) into runs of constant UTC offset, finding transitions by bisection."""
    lo_ts, hi_ts = math.floor(lo.timestamp()), math.ceil(hi.timestamp())
    segments = []
    while lo_ts < hi_ts:
        offset = _offset_at(lo_ts, zone)
        if _offset_at(hi_ts, zone) == offset:
            end_ts = hi_ts
        else:
            # Transitions fall on whole seconds, and no real zone changes offset and
            # back within the under-three-day span, so one bisection finds the change.
            before, end_ts = lo_ts, hi_ts
            while end_ts - before > 1:
                mid = (before + end_ts) // 2
                if _offset_at(mid, zone) == offset:
                    before = mid
                else:
                    end_ts = mid
        segments.append((
            dt.datetime.fromtimestamp(lo_ts, UTC),
            dt.datetime.fromtimestamp(end_ts, UTC),
            offset,
        ))
        lo_ts = end_ts
    return segments


def _wall_intervals(
    day: dt.date, start: dt.time, end: dt.time, zone: ZoneInfo
) -> list[tuple[dt.datetime, dt.datetime]]:
    """Return the UTC intervals whose wall time on `day` lies in [start, end).

    Solving per run of constant offset handles DST exactly: a start inside a
    spring-forward gap opens when the gap ends, and wall times that repeat when
    clocks go back are open on both passes.
    """
    wall_start = dt.datetime.combine(day, start, UTC)
    wall_end = dt.datetime.combine(day + dt.timedelta(days=1) if end == MIDNIGHT else day, end, UTC)
    intervals = []
    for seg_start, seg_end, offset in _offset_segments(zone, wall_start - _MAX_OFFSET, wall_end + _MAX_OFFSET):
        lo, hi = max(seg_start, wall_start - offset), min(seg_end, wall_end - offset)
        if lo < hi:
            intervals.append((lo, hi))
    return intervals


def local_day_bounds(day: dt.date, zone: str) -> tuple[dt.datetime, dt.datetime]:
    """Return the first instant of a local date and the first instant after it, in UTC."""
    intervals = _wall_intervals(day, MIDNIGHT, MIDNIGHT, _zone(zone))
    return intervals[0][0], intervals[-1][1]


def _resolve_wall(wall: dt.datetime, zone: ZoneInfo) -> dt.datetime:
    """Turn a naive local wall time into UTC; gaps shift forward, repeats take the first."""
    # PEP 495 fold=0 does both: an ambiguous time maps to its first occurrence, and a
    # nonexistent one uses the pre-transition offset, landing as far past the gap as it
    # fell into it (02:30 on a 02:00->03:00 day becomes 03:30, keeping the elapsed time).
    return wall.replace(tzinfo=zone, fold=0).astimezone(UTC)


@dataclass(frozen=True)
class LocalCalendar:
    """A lead's sending calendar: a window applied in one or more zones, minus closed dates.

    With several zones (a lead whose zone is ambiguous) a moment is open only when it
    is open in every zone, the most restrictive reading.
    """

    window: Window
    zones: tuple[str, ...]
    holiday_country: str | None
    skip_dates: frozenset[dt.date] = field(default_factory=frozenset)

    def __post_init__(self) -> None:
        zones = (self.zones,) if isinstance(self.zones, str) else tuple(self.zones)
        if not zones:
            raise ValueError("a calendar needs at least one time zone")
        for name in zones:
            _zone(name)
        object.__setattr__(self, "zones", zones)
        object.__setattr__(self, "skip_dates", frozenset(self.skip_dates))
        if self.holiday_country is not None:
            country = self.holiday_country.strip().upper()
            # Fail here, with the code named, rather than halfway through a search.
            _holidays(country, 2000)
            object.__setattr__(self, "holiday_country", country)

    def _is_closed(self, day: dt.date) -> bool:
        """Tell whether a date is a holiday or a skip date."""
        if day in self.skip_dates:
            return True
        return self.holiday_country is not None and day in _holidays(self.holiday_country, day.year)

    def _is_open_in(self, at: dt.datetime, zone: ZoneInfo) -> bool:
        """Tell whether a UTC instant is open in one zone."""
        local = at.astimezone(zone)
        return (
            local.weekday() in self.window.days
            and self.window.contains_time(local.time())
            and not self._is_closed(local.date())
        )

    def is_open(self, at: dt.datetime) -> bool:
        """Tell whether sending is allowed at a UTC instant in every zone."""
        at = _require_aware(at, "at")
        return all(self._is_open_in(at, _zone(name)) for name in self.zones)

    def _next_opening_in(self, at: dt.datetime, zone: ZoneInfo, until: dt.datetime) -> dt.datetime | None:
        """Return the first open instant >= at in one zone, or None if none before `until`."""
        best: dt.datetime | None = None
        # Start a day early: when clocks go back over midnight, part of the previous
        # local date can come after `at`.
        day = at.astimezone(zone).date() - dt.timedelta(days=1)
        while True:
            # Later days' intervals cannot begin before this bound, so stop once it
            # passes the best candidate or the horizon.
            earliest = dt.datetime.combine(day, self.window.start, UTC) - _MAX_OFFSET
            if best is not None and earliest >= best:
                return best
            if earliest > until:
                return None
            if day.weekday() in self.window.days and not self._is_closed(day):
                for lo, hi in _wall_intervals(day, self.window.start, self.window.end, zone):
                    if hi > at:
                        candidate = max(lo, at)
                        if best is None or candidate < best:
                            best = candidate
            day += dt.timedelta(days=1)

    def _parts(self) -> list[tuple[LocalCalendar, ZoneInfo]]:
        """Return the (calendar, zone) pairs that must all be open."""
        return [(self, _zone(name)) for name in self.zones]

    def next_opening(self, at: dt.datetime) -> dt.datetime:
        """Return `at` if it is open, else the first later instant open in every zone."""
        at = _require_aware(at, "at")
        found = _common_opening(self._parts(), at)
        if found is None:
            raise NoOpening(
                f"window {self.window} never opens in {', '.join(self.zones)} within"
                f" {SEARCH_HORIZON.days} days after {at.isoformat()}"
                f"{' (holidays: ' + self.holiday_country + ')' if self.holiday_country else ''};"
                " check the window days and hours, the zones and the skip dates"
            )
        return found

    def is_business_day(self, day: dt.date, zone: str | None = None) -> bool:
        """Tell whether a date is a weekday that is neither a holiday nor a skip date.

        `zone` is accepted for callers that reason per zone; a date's status does not
        depend on it, because holidays belong to the country.
        """
        if zone is not None:
            _zone(zone)
        return day.weekday() < 5 and not self._is_closed(day)

    def add_wait(self, start: dt.datetime, wait: Wait) -> dt.datetime:
        """Return the raw due moment of a wait counted from `start`, before windowing."""
        start = _require_aware(start, "start")
        if wait.amount == 0:
            return start
        if wait.unit == "hours":
            return start + dt.timedelta(hours=wait.amount)
        zone = _zone(self.zones[0])
        local = start.astimezone(zone)
        day = local.date()
        if wait.unit == "days":
            day += dt.timedelta(days=wait.amount)
        else:
            remaining = wait.amount
            while remaining:
                day += dt.timedelta(days=1)
                remaining -= self.is_business_day(day)
        return _resolve_wall(dt.datetime.combine(day, local.time()), zone)

    def due_at(self, previous: dt.datetime, wait: Wait) -> dt.datetime:
        """Return when the next step is due: the wait from `previous`, moved into the window."""
        return self.next_opening(self.add_wait(previous, wait))


def _common_opening(
    parts: Sequence[tuple[LocalCalendar, ZoneInfo]], at: dt.datetime, horizon: dt.timedelta = SEARCH_HORIZON
) -> dt.datetime | None:
    """Return the first instant >= `at` open in every (calendar, zone) part, or None within the horizon."""
    until = at + horizon
    moment = at
    # Each part's next opening never passes the earliest instant open in all parts, so
    # advancing part by part until none moves reaches exactly that instant.
    while True:
        moved = False
        for calendar, zone in parts:
            found = calendar._next_opening_in(moment, zone, until)
            if found is None or found > until:
                return None
            if found != moment:
                moment, moved = found, True
        if not moved:
            return moment


# Contact hours: when calls and texts may reach a lead (../shared/COMPLIANCE.md rule 8).

# The TCPA's calling hours (47 CFR 64.1200(c)(1)): no earlier than 8 a.m. and no later
# than 9 p.m. at the called party's location.
TCPA_HOURS = (dt.time(8), dt.time(21))
_EVERY_DAY = frozenset(range(7))
# Contact hours recur daily and UTC offsets yearly, so a year and a margin sees every
# combination of the zones' offsets: no shared hour by then means none at all.
_CONTACT_HORIZON = dt.timedelta(days=400)


class NoContactHours(NoOpening):
    """Raised when a lead's candidate zones share no contact hours at all."""

    def __init__(self, zones: Sequence[str], hours: ContactHours) -> None:
        self.zones = tuple(zones)
        self.hours = hours
        super().__init__(
            f"contact hours {hours} never hold at once in all of the lead's zones ({', '.join(self.zones)});"
            " set the lead's timezone so that one zone applies"
        )


@dataclass(frozen=True)
class ContactHours:
    """Local hours, every day, when phone channels may reach a lead; start inclusive, end exclusive.

    The wall clock of each zone counts, so 08:00-21:00 stays 08:00-21:00 across DST changes.
    """

    start: dt.time = TCPA_HOURS[0]
    end: dt.time = TCPA_HOURS[1]

    def __post_init__(self) -> None:
        if self.end != MIDNIGHT and self.start >= self.end:
            raise ValueError(
                f"contact hours {self} are empty; the start must be before the end"
                " (they cannot span midnight)"
            )

    @classmethod
    def parse(cls, start: str, end: str, *, allow_wider_than_tcpa: bool = False) -> ContactHours:
        """Build contact hours from "HH:MM" times; wider than 08:00-21:00 only when allowed."""
        hours = cls(
            _parse_time(start, "contact_hours.start", allow_24=False),
            _parse_time(end, "contact_hours.end", allow_24=True),
        )
        if not allow_wider_than_tcpa:
            tcpa = f"{TCPA_HOURS[0]:%H:%M}-{TCPA_HOURS[1]:%H:%M}"
            fix = (f"the TCPA allows calls and texts only {tcpa} local time; narrow it, or set"
                   " allow_wider_than_tcpa = true in [contact_hours] if none of your leads is covered by it")
            if hours.start < TCPA_HOURS[0]:
                raise ValueError(f"contact_hours.start {start!r} is earlier than {TCPA_HOURS[0]:%H:%M}: {fix}")
            if hours.end == MIDNIGHT or hours.end > TCPA_HOURS[1]:
                raise ValueError(f"contact_hours.end {end!r} is later than {TCPA_HOURS[1]:%H:%M}: {fix}")
        return hours

    def calendar(self, zones: Sequence[str]) -> LocalCalendar:
        """Return a calendar open during these hours in every one of `zones`."""
        zones = tuple(zones)
        if not zones:
            raise ValueError(
                "contact hours need the lead's time zone and none is known; set the lead's timezone,"
                " or a phone or country it can be inferred from"
            )
        return _contact_calendar(self, zones)

    def __str__(self) -> str:
        end = "24:00" if self.end == MIDNIGHT else f"{self.end:%H:%M}"
        return f"{self.start:%H:%M}-{end}"


@functools.lru_cache(maxsize=1024)
def _contact_calendar(hours: ContactHours, zones: tuple[str, ...]) -> LocalCalendar:
    # Leads share a handful of zone sets; holidays do not apply to contact hours.
    return LocalCalendar(Window(_EVERY_DAY, hours.start, hours.end), zones, None)


def in_contact_hours(zones: Sequence[str], hours: ContactHours, at: dt.datetime) -> bool:
    """Tell whether `at` is inside contact hours in every one of the lead's zones."""
    return hours.calendar(zones).is_open(at)


def next_contact_opening(zones: Sequence[str], hours: ContactHours, at: dt.datetime) -> dt.datetime:
    """Return `at` if it is inside contact hours in every zone, else the first later instant that is.

    Raises NoContactHours when the zones never share an instant inside the hours.
    """
    contact = hours.calendar(zones)
    found = _common_opening(contact._parts(), _require_aware(at, "at"), _CONTACT_HORIZON)
    if found is None:
        raise NoContactHours(contact.zones, hours)
    return found


def next_phone_opening(
    calendar: LocalCalendar, zones: Sequence[str], hours: ContactHours, at: dt.datetime
) -> dt.datetime:
    """Return the first instant >= `at` open in the cadence's calendar and inside contact hours.

    The calendar may use other zones than the lead's (a cadence with a fixed zone); contact
    hours always use the lead's. Raises NoContactHours when the lead's zones share no
    contact hours, NoOpening when the window and the contact hours never meet.
    """
    # Zones that share no contact hours fail here, quickly and with their own error.
    first_contact = next_contact_opening(zones, hours, at)
    contact = hours.calendar(zones)
    found = _common_opening(calendar._parts() + contact._parts(), first_contact)
    if found is not None:
        return found
    raise NoOpening(
        f"window {calendar.window} in {', '.join(calendar.zones)} never meets contact hours {hours} in"
        f" {', '.join(contact.zones)} within {SEARCH_HORIZON.days} days after {first_contact.isoformat()};"
        " widen the cadence window's hours or days"
    )
