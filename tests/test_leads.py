"""Lead data rules: email, phone and zone normalization, and finding a lead by what a user types."""
from __future__ import annotations

import pytest

from sequencer.leads import (
    LeadDataError,
    email_key,
    find_lead,
    infer_zones,
    lead_domain,
    normalize_email,
    parse_phone,
    validate_country,
    validate_zone,
)
from sequencer.models import Cadence, Lead


def test_normalize_email_lowercases_the_domain_only() -> None:
    assert normalize_email("  Jane.Doe@Example.COM ") == "Jane.Doe@example.com"
    assert email_key("Jane.Doe@Example.COM") == "jane.doe@example.com"


@pytest.mark.parametrize("text", ["not-an-email", "jane@", "jane@example", "a b@example.com", ""])
def test_normalize_email_names_the_bad_value(text: str) -> None:
    with pytest.raises(LeadDataError, match=f"email '{text}' is not valid"):
        normalize_email(text)


def test_lead_domain() -> None:
    assert lead_domain("Jane@Sub.Example.com") == "sub.example.com"
    assert lead_domain(None) is None
    assert lead_domain("no-at-sign") is None


@pytest.mark.parametrize(("text", "region", "expected"), [
    ("+1 (212) 736-5000", None, "+12127365000"),
    ("(212) 736-5000", "US", "+12127365000"),
    ("030 1234567", "DE", "+49301234567"),
    ("+49 30 1234567", "US", "+49301234567"),
])
def test_parse_phone_returns_e164(text: str, region: str | None, expected: str) -> None:
    assert parse_phone(text, region) == expected


def test_parse_phone_errors_name_the_number_and_the_region() -> None:
    with pytest.raises(LeadDataError, match=r"phone '\+7 999' is not a valid number for RU"):
        parse_phone("+7 999", "US")
    with pytest.raises(LeadDataError, match="phone '12345' is not a valid number for US"):
        parse_phone("12345", "US")
    with pytest.raises(LeadDataError, match="no valid country code"):
        parse_phone("212 736 5000", None)
    with pytest.raises(LeadDataError, match="is not a phone number"):
        parse_phone("call me", "US")


def test_infer_zones_from_a_new_york_number_is_one_zone() -> None:
    assert infer_zones("+12127365000", None) == (["America/New_York"], "inferred")


def test_infer_zones_from_a_russian_mobile_is_ambiguous() -> None:
    zones, source = infer_zones("+79161234567", None)
    assert source == "ambiguous"
    assert {"Europe/Moscow", "Asia/Vladivostok", "Asia/Yekaterinburg"} <= set(zones)
    assert "Etc/Unknown" not in zones


def test_infer_zones_prefers_the_phone_over_the_country() -> None:
    assert infer_zones("+4930123456", "US") == (["Europe/Berlin"], "inferred")


def test_infer_zones_from_a_country_uses_every_zone_of_it() -> None:
    # zone.tab lists Busingen (a German exclave on Swiss time) besides Berlin.
    assert infer_zones(None, "DE") == (["Europe/Berlin", "Europe/Busingen"], "ambiguous")
    assert infer_zones(None, "fr") == (["Europe/Paris"], "inferred")
    zones, source = infer_zones(None, "US")
    assert source == "ambiguous" and {"America/New_York", "America/Los_Angeles", "Pacific/Honolulu"} <= set(zones)


def test_infer_zones_without_phone_or_country_is_unknown() -> None:
    assert infer_zones(None, None) == ([], "unknown")
    assert infer_zones(None, "XX") == ([], "unknown")


def test_validate_zone() -> None:
    assert validate_zone("Europe/Berlin") == "Europe/Berlin"
    assert validate_zone(" america/new_york ") == "America/New_York"
    with pytest.raises(LeadDataError, match="time zone 'Mars/Olympus' is unknown; use an IANA name"):
        validate_zone("Mars/Olympus")
    with pytest.raises(LeadDataError, match="time zone '../etc/passwd' is unknown"):
        validate_zone("../etc/passwd")


def test_validate_country() -> None:
    assert validate_country(" de ") == "DE"
    with pytest.raises(LeadDataError, match="country 'Germany' is not a two-letter ISO 3166 code"):
        validate_country("Germany")


def test_find_lead_by_id_phone_or_email(runtime) -> None:
    now = runtime.now()
    with runtime.session() as session:
        jane = Lead(email="Jane@Example.com", email_normalized="jane@example.com", phone="+12127365000",
                    created_at=now, updated_at=now)
        twin_a = Lead(phone="+4930123456", created_at=now, updated_at=now)
        twin_b = Lead(phone="+4930123456", created_at=now, updated_at=now)
        session.add_all([jane, twin_a, twin_b])
        session.flush()
        assert find_lead(session, str(jane.id)) is jane
        assert find_lead(session, "JANE@example.COM") is jane
        assert find_lead(session, "+1 212 736 5000") is jane
        with pytest.raises(LookupError, match="no lead with id 999"):
            find_lead(session, "999")
        with pytest.raises(LookupError, match="no lead with email nobody@example.com"):
            find_lead(session, "nobody@example.com")
        with pytest.raises(LookupError, match=rf"phone \+4930123456 belongs to several leads \(ids {twin_a.id}, "):
            find_lead(session, "+4930123456")
        with pytest.raises(LookupError, match="'Jane Doe' is not a lead id, an E.164 phone"):
            find_lead(session, "Jane Doe")


def test_enroll_names_a_lead_that_does_not_exist(cli, runtime) -> None:
    assert "cadence 'Nope' does not exist" in cli("enroll", "--cadence", "Nope", "1", expect=1).output
    with runtime.session() as session:
        session.add(Cadence(name="Outbound", version=1, definition_hash="x", created_at=runtime.now()))
    result = cli("enroll", "--cadence", "Outbound", "nobody@example.com", expect=1)
    assert "no lead with email nobody@example.com; nobody was enrolled" in result.output
