from __future__ import annotations

import datetime as dt
from zoneinfo import ZoneInfo

import holidays
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from sequencer.calendar import (
    TCPA_HOURS,
    WEEKDAYS,
    ContactHours,
    LocalCalendar,
    NoContactHours,
    NoOpening,
    Wait,
    Window,
    in_contact_hours,
    local_day_bounds,
    next_contact_opening,
    next_phone_opening,
)
from sequencer.leads import infer_zones

UTC = dt.timezone.utc
NY = "America/New_York"
LA = "America/Los_Angeles"
BERLIN = "Europe/Berlin"
LONDON = "Europe/London"
MOSCOW = "Europe/Moscow"

OFFICE = Window.parse(["mon", "tue", "wed", "thu", "fri"], "09:00", "17:00")
CALLS = Window.parse(list(WEEKDAYS), "08:00", "21:00")


def utc(*args: int) -> dt.datetime:
    """Build a UTC datetime."""
    return dt.datetime(*args, tzinfo=UTC)


def local(zone: str, *args: int, fold: int = 0) -> dt.datetime:
    """Build a UTC datetime from a local wall time in `zone`."""
    return dt.datetime(*args, tzinfo=ZoneInfo(zone), fold=fold).astimezone(UTC)


def office(zone: str, country: str | None = None, skip: frozenset[dt.date] = frozenset()) -> LocalCalendar:
    """Build a Mon-Fri 09:00-17:00 calendar in one zone."""
    return LocalCalendar(OFFICE, (zone,), country, skip)


# Window and Wait parsing


def test_window_parse_accepts_names_in_any_case_and_24_00() -> None:
    window = Window.parse([" Mon", "SAT"], "08:00", "24:00")
    assert window == Window(frozenset({0, 5}), dt.time(8), dt.time(0))
    assert str(window) == "mon,sat 08:00-24:00"


@pytest.mark.parametrize(
    ("days", "start", "end", "named"),
    [
        (["mon", "funday"], "09:00", "17:00", "'funday'"),
        ([], "09:00", "17:00", "[]"),
        (["mon"], "9am", "17:00", "'9am'"),
        (["mon"], "09:00", "25:00", "'25:00'"),
        (["mon"], "24:00", "17:00", "'24:00'"),
        (["mon"], "09:60", "17:00", "'09:60'"),
        (["mon"], "17:00", "09:00", "17:00-09:00"),
        (["mon"], "09:00", "09:00", "09:00-09:00"),
    ],
)
def test_window_parse_errors_name_the_bad_value(days: list[str], start: str, end: str, named: str) -> None:
    with pytest.raises(ValueError, match=r"expected|must|before") as excinfo:
        Window.parse(days, start, end)
    assert named in str(excinfo.value)


def test_window_always_is_open_at_every_instant() -> None:
    calendar = LocalCalendar(Window.ALWAYS, (NY,), None)
    for hours in range(0, 24 * 8, 5):
        moment = utc(2026, 3, 5) + dt.timedelta(hours=hours, minutes=17)
        assert calendar.is_open(moment)
        assert calendar.next_opening(moment) == moment


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("0d", Wait(0, "days")),
        ("3d", Wait(3, "days")),
        ("3 days", Wait(3, "days")),
        ("1 day", Wait(1, "days")),
        (" 3D ", Wait(3, "days")),
        ("2 business days", Wait(2, "business_days")),
        ("1 Business  Day", Wait(1, "business_days")),
        ("4h", Wait(4, "hours")),
        ("4 hours", Wait(4, "hours")),
        ("1 hour", Wait(1, "hours")),
        ("24H", Wait(24, "hours")),
    ],
)
def test_wait_parse_accepted_forms(text: str, expected: Wait) -> None:
    assert Wait.parse(text) == expected
    assert Wait.parse(str(expected)) == expected


@pytest.mark.parametrize("text", ["", "3", "d", "-1d", "3 weeks", "1.5h", "2 business", "3dd"])
def test_wait_parse_errors_name_the_text_and_the_forms(text: str) -> None:
    with pytest.raises(ValueError) as excinfo:
        Wait.parse(text)
    assert repr(text) in str(excinfo.value)
    assert "2 business days" in str(excinfo.value)


def test_wait_str_is_canonical() -> None:
    assert [str(Wait.parse(t)) for t in ("3 days", "1 business day", "2 business days", "4 hours")] == [
        "3d", "1 business day", "2 business days", "4h",
    ]


# Windows, weekends, holidays, skip dates


def test_friday_after_hours_moves_to_monday_morning_local() -> None:
    calendar = office(NY)
    assert calendar.next_opening(local(NY, 2026, 6, 5, 17, 30)) == local(NY, 2026, 6, 8, 9, 0)


def test_window_includes_start_and_excludes_end() -> None:
    calendar = office(BERLIN)
    assert calendar.is_open(local(BERLIN, 2026, 6, 3, 9, 0))
    assert calendar.is_open(local(BERLIN, 2026, 6, 3, 16, 59, 59))
    assert not calendar.is_open(local(BERLIN, 2026, 6, 3, 17, 0))
    assert not calendar.is_open(local(BERLIN, 2026, 6, 3, 8, 59, 59))


def test_calls_at_20_59_local_are_open_and_at_21_00_deferred_to_next_morning() -> None:
    calendar = LocalCalendar(CALLS, (NY,), None)
    assert calendar.is_open(local(NY, 2026, 6, 3, 20, 59))
    assert not calendar.is_open(local(NY, 2026, 6, 3, 21, 0))
    assert calendar.due_at(local(NY, 2026, 6, 3, 21, 0), Wait.parse("0d")) == local(NY, 2026, 6, 4, 8, 0)


@pytest.mark.parametrize(
    ("zone", "country", "after", "opens"),
    [
        # Christmas on a Friday; GB also observes Boxing Day on Monday the 28th.
        (LONDON, "GB", (2026, 12, 24, 17, 0), (2026, 12, 29, 9, 0)),
        (NY, "US", (2026, 12, 24, 17, 0), (2026, 12, 28, 9, 0)),
        # New Year's Day 2027 is a Friday.
        (LONDON, "GB", (2026, 12, 31, 17, 0), (2027, 1, 4, 9, 0)),
        (NY, "US", (2026, 12, 31, 17, 0), (2027, 1, 4, 9, 0)),
        # Russia rests from January 1 to 9 in 2026.
        (MOSCOW, "RU", (2025, 12, 31, 17, 0), (2026, 1, 12, 9, 0)),
    ],
)
def test_holidays_are_closed(zone: str, country: str, after: tuple[int, ...], opens: tuple[int, ...]) -> None:
    calendar = office(zone, country)
    assert calendar.next_opening(local(zone, *after)) == local(zone, *opens)
    assert office(zone).next_opening(local(zone, *after)) < local(zone, *opens)


def test_russian_new_year_holidays_are_not_business_days() -> None:
    calendar = office(MOSCOW, "RU")
    assert not any(calendar.is_business_day(dt.date(2026, 1, d)) for d in range(1, 9))
    assert calendar.is_business_day(dt.date(2026, 1, 12))


def test_holidays_follow_the_local_date_of_each_instant() -> None:
    calendar = LocalCalendar(Window.ALWAYS, ("Pacific/Auckland",), "US")
    # 2025-07-03 13:00 UTC is already July 4 in Auckland.
    assert not calendar.is_open(utc(2025, 7, 3, 13, 0))
    assert calendar.is_open(utc(2025, 7, 3, 11, 0))


def test_skip_dates_close_the_day_and_are_not_business_days() -> None:
    calendar = office(NY, skip=frozenset({dt.date(2026, 6, 8)}))
    assert calendar.next_opening(local(NY, 2026, 6, 5, 17, 30)) == local(NY, 2026, 6, 9, 9, 0)
    assert not calendar.is_business_day(dt.date(2026, 6, 8))
    assert calendar.is_business_day(dt.date(2026, 6, 9))


def test_unknown_holiday_country_names_the_code() -> None:
    with pytest.raises(ValueError, match="'XX'"):
        LocalCalendar(OFFICE, (NY,), "XX")


def test_holiday_country_code_is_case_tolerant() -> None:
    assert LocalCalendar(OFFICE, (NY,), "us").holiday_country == "US"


def test_unknown_zone_names_the_zone() -> None:
    with pytest.raises(ValueError, match="'Mars/Olympus'"):
        LocalCalendar(OFFICE, ("Mars/Olympus",), None)


def test_naive_datetimes_are_refused() -> None:
    calendar = office(NY)
    naive = dt.datetime(2026, 6, 3, 12, 0)
    for call in (calendar.is_open, calendar.next_opening, lambda t: calendar.add_wait(t, Wait.parse("1d"))):
        with pytest.raises(ValueError, match="naive"):
            call(naive)


def test_window_that_never_opens_raises_no_opening() -> None:
    never = LocalCalendar(Window(frozenset(), dt.time(9), dt.time(17)), (NY,), None)
    with pytest.raises(NoOpening, match="never opens"):
        never.next_opening(utc(2026, 6, 3))
    # Monday 09:00-10:00 in New York is Monday 22:00-23:00 in Tokyo.
    apart = LocalCalendar(Window.parse(["mon"], "09:00", "10:00"), (NY, "Asia/Tokyo"), None)
    with pytest.raises(NoOpening, match="America/New_York, Asia/Tokyo"):
        apart.next_opening(utc(2026, 6, 3))


# Several zones: the most restrictive reading


def test_new_york_and_los_angeles_calls_open_11_to_21_eastern() -> None:
    calendar = LocalCalendar(CALLS, (NY, LA), None)
    assert calendar.next_opening(local(NY, 2026, 6, 3, 7, 0)) == local(NY, 2026, 6, 3, 11, 0)
    assert not calendar.is_open(local(NY, 2026, 6, 3, 10, 59))
    assert calendar.is_open(local(NY, 2026, 6, 3, 11, 0))
    assert calendar.is_open(local(NY, 2026, 6, 3, 20, 59))
    assert not calendar.is_open(local(NY, 2026, 6, 3, 21, 0))
    assert calendar.next_opening(local(NY, 2026, 6, 3, 21, 0)) == local(NY, 2026, 6, 4, 11, 0)


# Daylight saving time


@pytest.mark.parametrize(
    ("zone", "friday", "monday", "utc_shift"),
    [
        (NY, (2026, 3, 6), (2026, 3, 9), -1),
        (NY, (2026, 10, 30), (2026, 11, 2), 1),
        (BERLIN, (2026, 3, 27), (2026, 3, 30), -1),
        (BERLIN, (2026, 10, 23), (2026, 10, 26), 1),
    ],
)
def test_window_keeps_wall_time_across_dst(
    zone: str, friday: tuple[int, int, int], monday: tuple[int, int, int], utc_shift: int
) -> None:
    calendar = office(zone)
    before = calendar.next_opening(local(zone, *friday, 8, 0))
    after = calendar.next_opening(local(zone, *friday, 17, 0))
    assert before == local(zone, *friday, 9, 0)
    assert after == local(zone, *monday, 9, 0)
    assert after.time().hour - before.time().hour == utc_shift


def test_window_start_in_spring_forward_gap_opens_when_the_gap_ends() -> None:
    calendar = LocalCalendar(Window.parse(["sun"], "02:30", "04:00"), (NY,), None)
    opening = calendar.next_opening(utc(2026, 3, 7))
    assert opening == utc(2026, 3, 8, 7, 0)
    assert opening.astimezone(ZoneInfo(NY)).time() == dt.time(3, 0)
    assert not calendar.is_open(opening - dt.timedelta(microseconds=1))


def test_window_start_in_fall_back_overlap_opens_at_first_occurrence() -> None:
    calendar = LocalCalendar(Window.parse(["sun"], "01:30", "04:00"), (NY,), None)
    assert calendar.next_opening(utc(2026, 10, 31)) == local(NY, 2026, 11, 1, 1, 30, fold=0)
    assert local(NY, 2026, 11, 1, 1, 30, fold=0) == utc(2026, 11, 1, 5, 30)


def test_repeated_wall_times_are_open_on_both_passes() -> None:
    # Berlin clocks go back from 03:00 to 02:00 on 2026-10-25.
    calendar = LocalCalendar(Window.parse(["sun"], "02:00", "02:30"), (BERLIN,), None)
    first = local(BERLIN, 2026, 10, 25, 2, 10, fold=0)
    second = local(BERLIN, 2026, 10, 25, 2, 10, fold=1)
    assert second - first == dt.timedelta(hours=1)
    assert calendar.is_open(first) and calendar.is_open(second)
    assert calendar.next_opening(local(BERLIN, 2026, 10, 25, 2, 40, fold=0)) == local(
        BERLIN, 2026, 10, 25, 2, 0, fold=1
    )


@pytest.mark.parametrize(
    ("zone", "saturday", "hours"),
    [
        (NY, (2026, 3, 7), 23),
        (NY, (2026, 10, 31), 25),
        (BERLIN, (2026, 3, 28), 23),
        (BERLIN, (2026, 10, 24), 25),
    ],
)
def test_one_day_wait_keeps_wall_time_across_dst(zone: str, saturday: tuple[int, int, int], hours: int) -> None:
    calendar = LocalCalendar(Window.ALWAYS, (zone,), None)
    start = local(zone, *saturday, 10, 0)
    due = calendar.add_wait(start, Wait.parse("1d"))
    assert due - start == dt.timedelta(hours=hours)
    assert due.astimezone(ZoneInfo(zone)).time() == dt.time(10, 0)
    assert calendar.add_wait(start, Wait.parse("24h")) - start == dt.timedelta(hours=24)
    start_day, end_day = local_day_bounds(dt.date(*saturday) + dt.timedelta(days=1), zone)
    assert end_day - start_day == dt.timedelta(hours=hours)


def test_day_wait_into_a_nonexistent_wall_time_moves_past_the_gap() -> None:
    calendar = LocalCalendar(Window.ALWAYS, (NY,), None)
    due = calendar.add_wait(local(NY, 2026, 3, 7, 2, 30), Wait.parse("1d"))
    assert due.astimezone(ZoneInfo(NY)).replace(tzinfo=None) == dt.datetime(2026, 3, 8, 3, 30)


def test_zero_wait_returns_the_start_even_in_a_repeated_hour() -> None:
    calendar = LocalCalendar(Window.ALWAYS, (NY,), None)
    second_pass = local(NY, 2026, 11, 1, 1, 30, fold=1)
    assert calendar.add_wait(second_pass, Wait.parse("0d")) == second_pass
    assert calendar.add_wait(second_pass, Wait.parse("0 business days")) == second_pass


# Business-day waits


def test_two_business_days_skip_weekend_and_holiday() -> None:
    calendar = office(NY, "US")
    # Wednesday before Thanksgiving: Thursday is a holiday, Friday counts, then Monday.
    start = local(NY, 2026, 11, 25, 10, 15)
    assert calendar.add_wait(start, Wait.parse("2 business days")) == local(NY, 2026, 11, 30, 10, 15)
    # Without holidays Thursday and Friday count.
    assert office(NY).add_wait(start, Wait.parse("2 business days")) == local(NY, 2026, 11, 27, 10, 15)


def test_due_at_moves_the_raw_due_moment_into_the_window() -> None:
    calendar = office(BERLIN, "DE")
    # Thursday 2026-04-02 18:00 + 1 day is Good Friday evening; Easter Monday is a holiday too.
    assert calendar.due_at(local(BERLIN, 2026, 4, 2, 18, 0), Wait.parse("1d")) == local(BERLIN, 2026, 4, 7, 9, 0)


def test_waits_count_in_the_first_zone() -> None:
    calendar = LocalCalendar(Window.ALWAYS, ("Asia/Tokyo", NY), None)
    # Friday 23:00 in Tokyo is still Friday in New York; the Tokyo calendar decides.
    start = local("Asia/Tokyo", 2026, 6, 5, 23, 0)
    assert calendar.add_wait(start, Wait.parse("1 business day")) == local("Asia/Tokyo", 2026, 6, 8, 23, 0)


def test_local_day_bounds_on_an_ordinary_day() -> None:
    assert local_day_bounds(dt.date(2026, 6, 3), "Asia/Kolkata") == (utc(2026, 6, 2, 18, 30), utc(2026, 6, 3, 18, 30))


# Properties

ZONES = [
    NY, BERLIN, MOSCOW, "Australia/Sydney", "Asia/Kolkata", "America/Sao_Paulo",
    "Pacific/Auckland", "Asia/Tokyo", "UTC", LONDON, LA,
]
COUNTRIES = ["US", "GB", "DE", "RU", "FR", "AU", "IN", "BR", None]

instants = st.datetimes(
    min_value=dt.datetime(2020, 1, 1), max_value=dt.datetime(2035, 12, 31), timezones=st.just(UTC)
)
# Minutes of the day, weighted towards the small hours where DST transitions live.
minutes = st.one_of(st.integers(0, 1439), st.sampled_from([0, 60, 90, 120, 150, 180, 210]))


@st.composite
def windows(draw: st.DrawFn) -> Window:
    """Draw a window with at least one day and a non-empty span."""
    days = draw(st.frozensets(st.integers(0, 6), min_size=1))
    start = draw(minutes)
    end = draw(st.integers(start + 1, 1440))
    as_time = lambda m: dt.time(m // 60 % 24, m % 60)  # noqa: E731
    return Window(days, as_time(start), as_time(end))


@st.composite
def calendars(draw: st.DrawFn, max_zones: int = 1) -> LocalCalendar:
    """Draw a calendar with random zones, window, holidays and skip dates."""
    zones = draw(st.lists(st.sampled_from(ZONES), min_size=1, max_size=max_zones, unique=True))
    skip = draw(st.frozensets(st.dates(dt.date(2020, 1, 1), dt.date(2036, 1, 31)), max_size=5))
    return LocalCalendar(draw(windows()), tuple(zones), draw(st.sampled_from(COUNTRIES)), skip)


waits = st.builds(Wait, st.integers(0, 30), st.sampled_from(Wait.UNITS))

PROPERTY = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def assert_utc(moment: dt.datetime) -> None:
    """Check that a result is an aware UTC datetime."""
    assert moment.tzinfo is UTC


def expected_open(calendar: LocalCalendar, moment: dt.datetime, zone: str) -> bool:
    """Decide openness in one zone straight from the rules."""
    wall = moment.astimezone(ZoneInfo(zone))
    window = calendar.window
    in_hours = window.start <= wall.time() and (window.end == dt.time(0) or wall.time() < window.end)
    country = calendar.holiday_country
    holiday = country is not None and wall.date() in holidays.country_holidays(country, years=wall.year)
    return wall.weekday() in window.days and in_hours and not holiday and wall.date() not in calendar.skip_dates


def next_opening_or_none(calendar: LocalCalendar, moment: dt.datetime) -> dt.datetime | None:
    """Return next_opening, or None when the zones never overlap."""
    try:
        return calendar.next_opening(moment)
    except NoOpening:
        event("no opening")
        return None


@PROPERTY
@given(calendars(max_zones=2), instants)
def test_is_open_follows_the_rules_in_every_zone(calendar: LocalCalendar, moment: dt.datetime) -> None:
    assert calendar.is_open(moment) == all(expected_open(calendar, moment, z) for z in calendar.zones)


@PROPERTY
@given(calendars(max_zones=3), instants)
def test_next_opening_is_the_first_open_instant(calendar: LocalCalendar, moment: dt.datetime) -> None:
    opening = next_opening_or_none(calendar, moment)
    if opening is None:
        return
    assert_utc(opening)
    assert opening >= moment
    assert calendar.is_open(opening)
    assert calendar.next_opening(opening) == opening
    if calendar.is_open(moment):
        assert opening == moment
        return
    gap = opening - moment
    samples = 40
    for k in range(samples):
        assert not calendar.is_open(moment + gap * k / samples)
    assert not calendar.is_open(opening - dt.timedelta(microseconds=1))


@PROPERTY
@given(calendars(max_zones=2), instants, waits)
def test_due_at_is_open_and_not_before_previous(calendar: LocalCalendar, previous: dt.datetime, wait: Wait) -> None:
    try:
        due = calendar.due_at(previous, wait)
    except NoOpening:
        event("no opening")
        return
    assert_utc(due)
    assert due >= previous
    assert calendar.is_open(due)


@PROPERTY
@given(calendars(), instants, st.integers(0, 30))
def test_hour_waits_are_exact(calendar: LocalCalendar, start: dt.datetime, hours: int) -> None:
    due = calendar.add_wait(start, Wait(hours, "hours"))
    assert_utc(due)
    assert due - start == dt.timedelta(hours=hours)


@PROPERTY
@given(calendars(), instants, st.integers(1, 30))
def test_day_waits_land_on_the_same_wall_time_n_days_later(calendar: LocalCalendar, start: dt.datetime, days: int) -> None:
    zone = ZoneInfo(calendar.zones[0])
    due = calendar.add_wait(start, Wait(days, "days"))
    assert_utc(due)
    wall_start, wall_due = start.astimezone(zone), due.astimezone(zone)
    assert wall_due.date() == wall_start.date() + dt.timedelta(days=days)
    # Equal unless the wall time did not exist that day; then it moved forward.
    assert wall_due.time() >= wall_start.time()
    assert abs((due - start) - dt.timedelta(days=days)) <= dt.timedelta(hours=2)


@PROPERTY
@given(calendars(), instants, st.integers(1, 10))
def test_business_day_waits_land_on_business_days(calendar: LocalCalendar, start: dt.datetime, count: int) -> None:
    zone = ZoneInfo(calendar.zones[0])
    due = calendar.add_wait(start, Wait(count, "business_days"))
    assert_utc(due)
    first, last = start.astimezone(zone).date(), due.astimezone(zone).date()
    assert calendar.is_business_day(last)
    between = [first + dt.timedelta(days=d) for d in range(1, (last - first).days)]
    assert sum(calendar.is_business_day(day) for day in between) == count - 1


@PROPERTY
@given(st.sampled_from(ZONES), st.dates(dt.date(2020, 1, 1), dt.date(2035, 12, 31)))
def test_local_day_bounds_cover_exactly_that_date(zone: str, day: dt.date) -> None:
    start, end = local_day_bounds(day, zone)
    assert_utc(start)
    tz = ZoneInfo(zone)
    assert start.astimezone(tz).date() == day
    assert (start - dt.timedelta(microseconds=1)).astimezone(tz).date() < day
    assert end.astimezone(tz).date() > day
    assert (end - dt.timedelta(microseconds=1)).astimezone(tz).date() == day


# Contact hours for calls and texts (COMPLIANCE.md rule 8)

TCPA = ContactHours()
TOKYO = "Asia/Tokyo"
# Every zone a US toll-free number can ring in, as phonenumbers reads it: Guam (UTC+10)
# to Pago Pago (UTC-11), with St. John's (UTC-3:30) and New York in between.
TOLL_FREE = ("+18005550123", None)


def test_contact_hours_default_to_the_tcpa_hours() -> None:
    assert (TCPA.start, TCPA.end) == TCPA_HOURS == (dt.time(8), dt.time(21))
    assert ContactHours.parse("08:00", "21:00") == TCPA
    assert str(ContactHours.parse("09:30", "20:00")) == "09:30-20:00"


@pytest.mark.parametrize(
    ("start", "end", "named"),
    [
        ("07:59", "21:00", "contact_hours.start '07:59' is earlier than 08:00"),
        ("08:00", "21:01", "contact_hours.end '21:01' is later than 21:00"),
        ("08:00", "24:00", "contact_hours.end '24:00' is later than 21:00"),
    ],
)
def test_contact_hours_wider_than_tcpa_are_refused_unless_allowed(start: str, end: str, named: str) -> None:
    with pytest.raises(ValueError, match=named) as error:
        ContactHours.parse(start, end)
    assert "allow_wider_than_tcpa = true" in str(error.value)
    wide = ContactHours.parse(start, end, allow_wider_than_tcpa=True)
    assert str(wide) == f"{start}-{end}"


@pytest.mark.parametrize(
    ("start", "end", "message"),
    [
        ("8am", "21:00", "contact_hours.start '8am' is not a time"),
        ("08:00", "25:00", "contact_hours.end '25:00' is out of range"),
        ("20:00", "09:00", "contact hours 20:00-09:00 are empty"),
        ("12:00", "12:00", "contact hours 12:00-12:00 are empty"),
    ],
)
def test_bad_contact_hours_name_the_setting(start: str, end: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        ContactHours.parse(start, end, allow_wider_than_tcpa=True)


@pytest.mark.parametrize("zone", [NY, BERLIN])
def test_frozen_clock_at_20_59_local_is_open_and_21_00_is_deferred_to_08_00(zone: str) -> None:
    assert in_contact_hours((zone,), TCPA, local(zone, 2026, 6, 3, 20, 59))
    assert next_contact_opening((zone,), TCPA, local(zone, 2026, 6, 3, 20, 59)) == local(zone, 2026, 6, 3, 20, 59)
    assert not in_contact_hours((zone,), TCPA, local(zone, 2026, 6, 3, 21, 0))
    assert next_contact_opening((zone,), TCPA, local(zone, 2026, 6, 3, 21, 0)) == local(zone, 2026, 6, 4, 8, 0)


def test_contact_hours_include_the_start_and_exclude_the_end() -> None:
    assert in_contact_hours((NY,), TCPA, local(NY, 2026, 6, 3, 8, 0))
    assert not in_contact_hours((NY,), TCPA, local(NY, 2026, 6, 3, 7, 59, 59))
    assert in_contact_hours((NY,), TCPA, local(NY, 2026, 6, 3, 20, 59, 59, 999999))


@pytest.mark.parametrize(
    ("zone", "evening", "morning_utc"),
    [
        # The night clocks spring forward, 08:00 is an hour earlier in UTC than the day before...
        (NY, (2026, 3, 7), utc(2026, 3, 8, 12, 0)),
        (BERLIN, (2026, 3, 28), utc(2026, 3, 29, 6, 0)),
        # ...and an hour later the night they fall back.
        (NY, (2026, 10, 31), utc(2026, 11, 1, 13, 0)),
        (BERLIN, (2026, 10, 24), utc(2026, 10, 25, 7, 0)),
    ],
)
def test_contact_hours_keep_the_wall_clock_across_dst(
    zone: str, evening: tuple[int, int, int], morning_utc: dt.datetime
) -> None:
    assert next_contact_opening((zone,), TCPA, local(zone, *evening, 21, 0)) == morning_utc
    assert morning_utc.astimezone(ZoneInfo(zone)).time() == dt.time(8, 0)


def test_ambiguous_eastern_to_pacific_number_is_called_when_every_zone_is_inside() -> None:
    zones = (NY, "America/Chicago", "America/Denver", LA)
    # 08:00 in Los Angeles is 11:00 in New York; 21:00 in New York closes it for everyone.
    assert not in_contact_hours(zones, TCPA, local(NY, 2026, 6, 3, 10, 59))
    assert next_contact_opening(zones, TCPA, local(NY, 2026, 6, 3, 9, 0)) == local(NY, 2026, 6, 3, 11, 0)
    assert in_contact_hours(zones, TCPA, local(NY, 2026, 6, 3, 20, 59))
    assert next_contact_opening(zones, TCPA, local(NY, 2026, 6, 3, 21, 0)) == local(NY, 2026, 6, 4, 11, 0)


def test_us_toll_free_number_is_contacted_only_in_the_hours_all_its_zones_share() -> None:
    zones, source = infer_zones(*TOLL_FREE)
    assert source == "ambiguous" and {NY, LA, "Pacific/Guam", "Pacific/Pago_Pago"} <= set(zones)
    # Summer: 08:00 in Guam (22:00 UTC) opens it, 21:00 in St. John's (23:30 UTC) closes it.
    assert next_contact_opening(zones, TCPA, utc(2026, 6, 3, 12, 0)) == utc(2026, 6, 3, 22, 0)
    assert in_contact_hours(zones, TCPA, utc(2026, 6, 3, 23, 29))
    assert not in_contact_hours(zones, TCPA, utc(2026, 6, 3, 23, 30))
    # Winter: St. John's is an hour behind, so the shared hours last until 00:30 UTC.
    assert in_contact_hours(zones, TCPA, utc(2026, 12, 4, 0, 29))
    assert not in_contact_hours(zones, TCPA, utc(2026, 12, 4, 0, 30))


def test_zones_that_share_no_contact_hours_raise_naming_them() -> None:
    zones = (NY, LONDON, TOKYO)
    with pytest.raises(NoContactHours, match="America/New_York, Europe/London, Asia/Tokyo") as error:
        next_contact_opening(zones, TCPA, utc(2026, 6, 3))
    assert error.value.zones == zones
    assert "set the lead's timezone" in str(error.value)
    assert not in_contact_hours(zones, TCPA, utc(2026, 6, 3, 12, 0))


def test_contact_hours_need_a_zone_and_an_aware_instant() -> None:
    with pytest.raises(ValueError, match="contact hours need the lead's time zone"):
        in_contact_hours((), TCPA, utc(2026, 6, 3))
    with pytest.raises(ValueError, match="naive"):
        next_contact_opening((NY,), TCPA, dt.datetime(2026, 6, 3, 12, 0))


def test_phone_opening_is_inside_the_cadence_window_and_contact_hours() -> None:
    # A cadence fixed to UTC office hours, a lead in Los Angeles: 16:00 UTC is 09:00 there.
    cadence = LocalCalendar(OFFICE, ("UTC",), None)
    assert next_phone_opening(cadence, (LA,), TCPA, utc(2026, 6, 3, 6, 0)) == utc(2026, 6, 3, 15, 0)
    # Friday 17:00 UTC: the window reopens Monday 09:00 UTC, 02:00 in Los Angeles; 08:00 there is 15:00 UTC.
    assert next_phone_opening(cadence, (LA,), TCPA, utc(2026, 6, 5, 17, 0)) == utc(2026, 6, 8, 15, 0)


def test_phone_opening_says_which_rule_never_opens() -> None:
    late = LocalCalendar(Window.parse(list(WEEKDAYS), "21:30", "23:00"), (NY,), None)
    with pytest.raises(NoOpening, match="never meets contact hours 08:00-21:00") as error:
        next_phone_opening(late, (NY,), TCPA, utc(2026, 6, 3))
    assert not isinstance(error.value, NoContactHours)
    with pytest.raises(NoContactHours):
        next_phone_opening(office(NY), (NY, LONDON, TOKYO), TCPA, utc(2026, 6, 3))


# Around the DST changes of New York and Berlin, where contact hours are most easily got wrong.
DST_DAYS = [dt.date(2026, 3, 8), dt.date(2026, 11, 1), dt.date(2026, 3, 29), dt.date(2026, 10, 25),
            dt.date(2027, 3, 14), dt.date(2027, 3, 28)]
near_dst = st.builds(
    lambda day, minutes: dt.datetime.combine(day, dt.time(0), UTC) + dt.timedelta(minutes=minutes),
    st.sampled_from(DST_DAYS), st.integers(-3 * 1440, 3 * 1440),
)
contact_zones = st.lists(st.sampled_from([NY, BERLIN, LA, "America/Chicago", LONDON]), min_size=1, max_size=3,
                         unique=True).map(tuple)


@st.composite
def contact_hours(draw: st.DrawFn) -> ContactHours:
    """Draw hours inside 08:00-21:00, to the minute."""
    start = draw(st.integers(8 * 60, 21 * 60 - 1))
    end = draw(st.integers(start + 1, 21 * 60))
    return ContactHours(dt.time(start // 60, start % 60), dt.time(end // 60, end % 60))


def inside_by_the_rules(zones: tuple[str, ...], hours: ContactHours, moment: dt.datetime) -> bool:
    """Decide contact hours straight from each zone's wall clock."""
    return all(hours.start <= moment.astimezone(ZoneInfo(z)).time() < hours.end for z in zones)


@PROPERTY
@given(contact_zones, contact_hours(), near_dst)
def test_contact_hours_follow_every_zones_wall_clock(
    zones: tuple[str, ...], hours: ContactHours, moment: dt.datetime
) -> None:
    assert in_contact_hours(zones, hours, moment) == inside_by_the_rules(zones, hours, moment)


@PROPERTY
@given(contact_zones, contact_hours(), near_dst)
def test_next_contact_opening_is_the_first_instant_inside(
    zones: tuple[str, ...], hours: ContactHours, moment: dt.datetime
) -> None:
    try:
        opening = next_contact_opening(zones, hours, moment)
    except NoContactHours:
        event("no shared hours")
        assert not any(inside_by_the_rules(zones, hours, moment + dt.timedelta(minutes=m)) for m in range(0, 2880, 5))
        return
    assert_utc(opening)
    assert opening >= moment
    assert inside_by_the_rules(zones, hours, opening)
    if inside_by_the_rules(zones, hours, moment):
        assert opening == moment
        return
    if len(zones) == 1:
        # Deferred, never dropped: in one zone the hours come back within a day (and a DST hour).
        assert opening - moment <= dt.timedelta(hours=25)
    gap = opening - moment
    for k in range(40):
        assert not inside_by_the_rules(zones, hours, moment + gap * k / 40)
    assert not inside_by_the_rules(zones, hours, opening - dt.timedelta(microseconds=1))


@PROPERTY
@given(calendars(max_zones=2), contact_zones, contact_hours(), near_dst)
def test_phone_opening_is_the_first_instant_open_in_both(
    calendar: LocalCalendar, zones: tuple[str, ...], hours: ContactHours, moment: dt.datetime
) -> None:
    try:
        opening = next_phone_opening(calendar, zones, hours, moment)
    except NoOpening:
        event("no opening")
        return
    assert_utc(opening)
    assert opening >= moment
    assert calendar.is_open(opening) and inside_by_the_rules(zones, hours, opening)
    if calendar.is_open(moment) and inside_by_the_rules(zones, hours, moment):
        assert opening == moment
        return
    gap = opening - moment
    for k in range(40):
        probe = moment + gap * k / 40
        assert not (calendar.is_open(probe) and inside_by_the_rules(zones, hours, probe))
    just_before = opening - dt.timedelta(microseconds=1)
    assert not (calendar.is_open(just_before) and inside_by_the_rules(zones, hours, just_before))
