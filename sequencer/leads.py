"""Lead data rules: email, phone and time-zone normalization, and finding a lead by what a user types."""
from __future__ import annotations

import functools
import importlib.resources
import zoneinfo

import phonenumbers
import sqlalchemy as sa
import sqlalchemy.orm as so
from email_validator import EmailNotValidError, validate_email
from phonenumbers import timezone as phone_timezones

from sequencer.models import Lead

# Time-zone sources stored in Lead.timezone_source.
GIVEN, INFERRED, AMBIGUOUS, UNKNOWN = "given", "inferred", "ambiguous", "unknown"


# A shared address at these providers says nothing about which company a person works for.
FREE_MAIL_DOMAINS = frozenset({
    "gmail.com", "googlemail.com", "yahoo.com", "outlook.com", "hotmail.com", "live.com", "icloud.com", "me.com",
    "aol.com", "proton.me", "protonmail.com", "gmx.de", "gmx.net", "web.de", "mail.ru", "yandex.ru", "ya.ru",
    "bk.ru", "inbox.ru", "list.ru", "rambler.ru",
})

class LeadDataError(ValueError):
    """A lead's email, phone, country or time zone cannot be used; the message names the value and the fix."""


def normalize_email(text: str) -> str:
    """Return the address in email-validator's normalized form (no DNS lookup)."""
    value = (text or "").strip()
    try:
        return validate_email(value, check_deliverability=False).normalized
    except EmailNotValidError as exc:
        raise LeadDataError(f"email '{value}' is not valid: {exc}") from None


def email_key(text: str) -> str:
    """Return the case-insensitive key of an address (Lead.email_normalized, suppression values)."""
    return normalize_email(text).lower()


def lead_domain(email: str | None) -> str | None:
    """Return the lowercased domain of an address, or None without one."""
    if not email or "@" not in email:
        return None
    return email.rsplit("@", 1)[1].strip().lower() or None


def parse_phone(text: str, default_region: str | None) -> str:
    """Parse a phone number written nationally (in default_region) or internationally into E.164."""
    value = (text or "").strip()
    region = (default_region or "").upper() or None
    try:
        number = phonenumbers.parse(value, region)
    except phonenumbers.NumberParseException as exc:
        if exc.error_type == phonenumbers.NumberParseException.INVALID_COUNTRY_CODE:
            raise LeadDataError(f"phone '{value}' has no valid country code; write it as +<country code> "
                                f"<number> or give the lead a country") from None
        raise LeadDataError(f"phone '{value}' is not a phone number ({exc})") from None
    if not phonenumbers.is_valid_number(number):
        where = phonenumbers.region_code_for_country_code(number.country_code)
        if value.startswith("+") or not region:
            region = where if where != phonenumbers.UNKNOWN_REGION else f"+{number.country_code}"
        raise LeadDataError(f"phone '{value}' is not a valid number for {region}")
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)


@functools.cache
def _available_zones() -> dict[str, str]:
    # Folded -> canonical, so "europe/berlin" in a CSV still finds Europe/Berlin.
    return {name.casefold(): name for name in zoneinfo.available_timezones()}


def validate_zone(name: str) -> str:
    """Return the canonical IANA name of a time zone (case-insensitive), or raise LeadDataError."""
    value = (name or "").strip()
    canonical = _available_zones().get(value.casefold())
    if canonical is None:
        raise LeadDataError(f"time zone '{value}' is unknown; use an IANA name like Europe/Berlin or America/New_York")
    return canonical


@functools.cache
def country_zones() -> dict[str, tuple[str, ...]]:
    """Return ISO country code -> its IANA zones, from the tzdata package's zone.tab."""
    table: dict[str, list[str]] = {}
    text = importlib.resources.files("tzdata").joinpath("zoneinfo", "zone.tab").read_text(encoding="utf-8")
    available = _available_zones().values()
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        country, _coords, zone, *_ = line.split("\t")
        if zone in available:
            table.setdefault(country, []).append(zone)
    return {country: tuple(zones) for country, zones in table.items()}


def validate_country(code: str) -> str:
    """Return an upper-case ISO 3166 alpha-2 code, or raise LeadDataError."""
    value = (code or "").strip().upper()
    if value not in country_zones():
        raise LeadDataError(f"country '{code.strip()}' is not a two-letter ISO 3166 code (like DE, US or GB)")
    return value


def infer_zones(phone: str | None, country: str | None) -> tuple[list[str], str]:
    """Return the candidate zones of a lead and their source: inferred (one), ambiguous (several), unknown (none).

    The phone number wins over the country: it usually narrows a country down to a region.
    """
    zones: list[str] = []
    if phone:
        try:
            number = phonenumbers.parse(phone, None)
        except phonenumbers.NumberParseException:
            number = None
        if number is not None:
            available = _available_zones().values()
            zones = [z for z in phone_timezones.time_zones_for_number(number)
                     if z != phone_timezones.UNKNOWN_TIMEZONE and z in available]
    if not zones and country:
        zones = list(country_zones().get(country.strip().upper(), ()))
    if not zones:
        return [], UNKNOWN
    return zones, INFERRED if len(zones) == 1 else AMBIGUOUS


def find_lead(session: so.Session, ref: str) -> Lead:
    """Return the lead a user means by its id, its E.164 phone or its email (any letter case)."""
    value = (ref or "").strip()
    if value.isdigit():
        lead = session.get(Lead, int(value))
        if lead is None:
            raise LookupError(f"no lead with id {value}")
        return lead
    if "@" in value:
        try:
            key = email_key(value)
        except LeadDataError:
            key = value.lower()
        lead = session.scalar(sa.select(Lead).where(Lead.email_normalized == key))
        if lead is None:
            raise LookupError(f"no lead with email {value}")
        return lead
    if value.startswith("+"):
        try:
            phone = parse_phone(value, None)
        except LeadDataError as exc:
            raise LookupError(str(exc)) from None
        leads = session.scalars(sa.select(Lead).where(Lead.phone == phone).order_by(Lead.id).limit(5)).all()
        if not leads:
            raise LookupError(f"no lead with phone {phone}")
        if len(leads) > 1:
            ids = ", ".join(str(lead.id) for lead in leads)
            raise LookupError(f"phone {phone} belongs to several leads (ids {ids}); give the lead's id or email")
        return leads[0]
    raise LookupError(f"'{value}' is not a lead id, an E.164 phone (+...) or an email")
