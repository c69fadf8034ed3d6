"""Instants as people read them: in the viewer's zone, with the lead's wall clock beside it where it differs."""
from __future__ import annotations

from datetime import datetime
from zoneinfo import ZoneInfo

# Within a week the weekday is enough; further away the date is needed too.
_NEAR_DAYS = 6


def wall(at: datetime, zone: str, today: datetime | None = None) -> str:
    """Return "Tue 10:05" (or "Tue 3 Mar 10:05" when more than a week from `today`) in the zone."""
    local = at.astimezone(ZoneInfo(zone))
    if today is not None and abs((local.date() - today.astimezone(ZoneInfo(zone)).date()).days) > _NEAR_DAYS:
        return f"{local:%a} {local.day} {local:%b %H:%M}"
    return f"{local:%a %H:%M}"


def for_both(at: datetime, viewer_zone: str, lead_zones: tuple[str, ...] | list[str], now: datetime) -> str:
    """Return "Tue 10:05 for you, 18:05 for the lead", or the viewer's time alone.

    The lead's side is shown only when their zone is known (one zone, not a list of candidates)
    and their wall clock differs from the viewer's; their weekday only when it is another day.
    """
    mine = wall(at, viewer_zone, now)
    if len(lead_zones) != 1:
        return mine
    viewer_local, lead_local = at.astimezone(ZoneInfo(viewer_zone)), at.astimezone(ZoneInfo(lead_zones[0]))
    if viewer_local.replace(tzinfo=None) == lead_local.replace(tzinfo=None):
        return mine
    theirs = f"{lead_local:%H:%M}" if lead_local.date() == viewer_local.date() else f"{lead_local:%a %H:%M}"
    return f"{mine} for you, {theirs} for the lead"


def lead_clock(now: datetime, lead_zones: tuple[str, ...] | list[str]) -> str:
    """Return the lead's time now: "Tue 18:05 (Europe/Berlin)", each candidate's when the zone is unsure."""
    if not lead_zones:
        return "unknown (no time zone)"
    return "; ".join(f"{now.astimezone(ZoneInfo(zone)):%a %H:%M} ({zone})" for zone in lead_zones)


def overdue(due_at: datetime, now: datetime) -> str:
    """Return how late a task is: "3 d overdue", "5 h overdue", "20 min overdue", or "due" when it is not."""
    late = (now - due_at).total_seconds()
    if late <= 0:
        return "due"
    if late >= 86400:
        return f"{int(late // 86400)} d overdue"
    if late >= 3600:
        return f"{int(late // 3600)} h overdue"
    return f"{max(1, int(late // 60))} min overdue"
