"""CSV lead import: row-level error report with physical line numbers, upserts, zones, dry run, scale."""
from __future__ import annotations

import io
import json
from collections import Counter
from datetime import timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa

from sequencer.consent import NO_CONSENT
from sequencer.importer import CsvFormatError, ImportReport, import_leads
from sequencer.leads import LeadDataError
from sequencer.models import AuditEntry, Enrollment, Lead
from sequencer.users import add_user
from sequencer.testing.world import ALWAYS_OPEN, REP, apply, enroll_csv, team, utc

DATA = Path(__file__).parent / "data" / "csv"


def run_import(runtime, text: str, **kwargs) -> ImportReport:
    with runtime.session() as session:
        return import_leads(session, io.StringIO(text, newline=""), now=runtime.now(),
                            default_region=kwargs.pop("default_region", "US"), **kwargs)


def leads_by_email(runtime) -> dict[str, Lead]:
    with runtime.session() as session:
        return {lead.email_normalized or lead.phone: lead for lead in session.scalars(sa.select(Lead))}


def count_statements(engine: sa.Engine) -> list[str]:
    statements: list[str] = []
    sa.event.listen(engine, "before_cursor_execute", lambda conn, cursor, statement, *rest: statements.append(statement))
    return statements


def test_broken_rows_are_reported_by_line_and_the_good_ones_import(cli) -> None:
    cli("users", "add", "rep@example.com", "--role", "rep")
    result = cli("leads", "import", str(DATA / "leads_broken.csv"), expect=1)
    lines = result.output.splitlines()
    assert lines[-1] == "imported 7, updated 0, rejected 4"
    by_line = {line.split(":", 1)[0]: line for line in lines[:-1]}
    assert set(by_line) == {"3", "4", "5", "7", "8"}
    assert by_line["3"].startswith("3: email 'not-an-email' is not valid")
    assert by_line["4"].startswith("4: time zone 'Mars/Olympus' is unknown")
    assert by_line["5"] == "5: no email and no phone; a lead needs at least one"
    assert by_line["7"] == "7: warning: phone '12345' is not a valid number for US; imported without a phone"
    assert by_line["8"].startswith("8: owner 'nobody@example.com' is not a user")

    listed = {row["email"] or row["phone"]: row for row in json.loads(cli("leads", "list", "--format", "json").output)}
    assert set(listed) == {"ana@example.com", "eve@example.com", "gus@example.com", "hana@example.com",
                           "ivan@example.com", "jo@example.com", "+12127365001"}
    ana = listed["ana@example.com"]
    assert (ana["phone"], ana["timezone"], ana["timezone_source"], ana["owner"], ana["name"], ana["company"]) == (
        "+12127365000", "America/New_York", "inferred", "rep@example.com", "Ana Lopez", "Acme")
    assert listed["eve@example.com"]["phone"] is None
    assert listed["gus@example.com"]["name"] == "Gus\nJunior"  # a quoted field over two lines
    assert (listed["jo@example.com"]["timezone"], listed["jo@example.com"]["timezone_source"]) == ("Europe/Paris", "given")
    assert (listed["+12127365001"]["timezone"], listed["+12127365001"]["owner"]) == ("America/New_York", None)


def test_zones_are_given_inferred_or_ambiguous_with_every_candidate(runtime) -> None:
    run_import(runtime, "email,phone,country,timezone\n"
                        "ny@example.com,+1 212 736 5000,,\n"
                        "ru@example.com,+7 916 123 4567,,\n"
                        "de@example.com,,DE,\n"
                        "berlin@example.com,030 1234567,DE,\n"
                        "given@example.com,+1 212 736 5000,,Asia/Tokyo\n"
                        "nowhere@example.com,,,\n")
    leads = leads_by_email(runtime)
    ny, ru, de = leads["ny@example.com"], leads["ru@example.com"], leads["de@example.com"]
    assert (ny.timezone, ny.timezone_source, ny.candidate_zones) == ("America/New_York", "inferred", ["America/New_York"])
    assert ru.timezone is None and ru.timezone_source == "ambiguous"
    assert len(ru.candidate_zones) > 5 and "Europe/Moscow" in ru.candidate_zones
    assert (de.timezone, de.timezone_source, de.candidate_zones) == (None, "ambiguous", ["Europe/Berlin", "Europe/Busingen"])
    # The country is the region of a national number, and the number narrows the zone down.
    berlin = leads["berlin@example.com"]
    assert (berlin.phone, berlin.timezone, berlin.timezone_source) == ("+49301234567", "Europe/Berlin", "inferred")
    given = leads["given@example.com"]
    assert (given.timezone, given.timezone_source, given.candidate_zones) == ("Asia/Tokyo", "given", ["Asia/Tokyo"])
    nowhere = leads["nowhere@example.com"]
    assert (nowhere.timezone, nowhere.timezone_source, nowhere.candidate_zones) == (None, "unknown", [])


def test_duplicates_by_external_id_and_by_email_update_the_lead(runtime) -> None:
    first = run_import(runtime, "external_id,email,first_name,company\n"
                                "CRM-1,ana@example.com,Ana,Acme\n"
                                ",Bob@Example.com,Bob,Initech\n")
    assert (first.imported, first.updated) == (2, 0)
    second = run_import(runtime, "external_id,email,first_name,title\n"
                                 "CRM-1,ana.lopez@example.com,Ana Maria,CEO\n"  # by external_id: email changes
                                 ",BOB@example.COM,,CTO\n"  # by email, any case: empty cells keep values
                                 "CRM-9,carl@example.com,Carl,\n"
                                 "CRM-9,carl@example.com,Carlos,\n")  # twice in one file: one lead
    assert (second.imported, second.updated, second.rejected) == (1, 3, [])
    leads = leads_by_email(runtime)
    assert set(leads) == {"ana.lopez@example.com", "bob@example.com", "carl@example.com"}
    ana, bob, carl = leads["ana.lopez@example.com"], leads["bob@example.com"], leads["carl@example.com"]
    assert (ana.external_id, ana.first_name, ana.company, ana.title, ana.domain) == (
        "CRM-1", "Ana Maria", "Acme", "CEO", "example.com")
    assert (bob.first_name, bob.company, bob.title, bob.email) == ("Bob", "Initech", "CTO", "BOB@example.com")
    assert carl.first_name == "Carlos"
    assert second.lead_ids == [ana.id, bob.id, carl.id]


def test_an_email_taken_by_another_crm_record_is_rejected(runtime) -> None:
    run_import(runtime, "external_id,email\nCRM-1,ana@example.com\nCRM-2,bob@example.com\n")
    report = run_import(runtime, "external_id,email\nCRM-3,ana@example.com\nCRM-2,ana@example.com\n")
    assert [str(p) for p in report.rejected] == [
        "2: email ana@example.com already belongs to lead 1 (external_id 'CRM-1'); fix the email or the external_id",
        "3: email ana@example.com already belongs to lead 1 (external_id 'CRM-1'), not to external_id 'CRM-2'; "
        "fix one of them",
    ]
    assert report.imported == report.updated == 0


def test_an_update_by_external_id_needs_no_email_or_phone(runtime) -> None:
    run_import(runtime, "external_id,email,title\nCRM-1,ana@example.com,VP\n")
    report = run_import(runtime, "external_id,phone,title\nCRM-1,,CEO\nCRM-2,,CTO\n")
    assert report.updated == 1
    assert [str(p) for p in report.rejected] == ["3: no email and no phone; a lead needs at least one"]
    assert leads_by_email(runtime)["ana@example.com"].title == "CEO"


def test_other_columns_become_custom_fields_merged_on_update(runtime) -> None:
    run_import(runtime, "email,Industry,Employee Count\nana@example.com,Retail,250\n")
    run_import(runtime, "email,Industry,Renewal Date\nana@example.com,Grocery,2026-09-01\n")
    ana = leads_by_email(runtime)["ana@example.com"]
    assert ana.custom == {"industry": "Grocery", "employee_count": "250", "renewal_date": "2026-09-01"}


def test_an_invalid_phone_without_email_rejects_the_row(runtime) -> None:
    report = run_import(runtime, "email,phone\n,+7 999\n")
    assert [str(p) for p in report.rejected] == [
        "2: phone '+7 999' is not a valid number for RU, and there is no email; a lead needs a valid email or phone"]


def test_a_rejected_row_gets_no_warnings(runtime) -> None:
    report = run_import(runtime, "email,phone,country,timezone\nana@example.com,12345,Germany,Mars/Olympus\n"
                                 "bob@example.com,12345,Germany,\n")
    assert [str(p) for p in report.rejected] == ["2: time zone 'Mars/Olympus' is unknown; use an IANA name like "
                                                 "Europe/Berlin or America/New_York"]
    assert [str(p) for p in report.warnings] == [
        "3: country 'Germany' is not a two-letter ISO 3166 code (like DE, US or GB); imported without a country",
        "3: phone '12345' is not a valid number for US; imported without a phone",
    ]


def test_rows_with_too_many_values_are_rejected_by_line(runtime) -> None:
    report = run_import(runtime, "email,company\n\nana@example.com,Acme, Inc\nbob@example.com\n")
    assert [str(p) for p in report.rejected] == [
        "3: 3 values but the header has 2 columns; quote values that contain ','"]
    assert report.imported == 1


def test_too_long_values_are_rejected_before_the_database_sees_them(runtime) -> None:
    report = run_import(runtime, f"email,title\nana@example.com,{'x' * 301}\n")
    assert [str(p) for p in report.rejected] == ["2: title is 301 characters long; the limit is 300"]


def test_bom_semicolons_and_header_spellings(cli) -> None:
    result = cli("leads", "import", str(DATA / "leads_bom_semicolon.csv"))
    assert result.output.splitlines()[-1] == "imported 1, updated 0, rejected 0"
    [lead] = json.loads(cli("leads", "list", "--format", "json").output)
    assert (lead["email"], lead["name"]) == ("bom@example.com", "Bo Martin")


def test_a_file_without_email_or_phone_column_names_the_columns_found(cli) -> None:
    result = cli("leads", "import", str(DATA / "leads_no_contact_column.csv"), expect=1)
    assert "no email or phone column; the header has: name, company" in result.output


def test_an_unknown_owner_option_stops_the_import(runtime) -> None:
    with pytest.raises(LeadDataError, match="owner 'ghost@example.com' is not a user"):
        run_import(runtime, "email\nana@example.com\n", owner_email="ghost@example.com")


def test_the_owner_option_applies_where_the_row_has_no_owner(runtime) -> None:
    with runtime.session() as session:
        rep = add_user(session, "rep@example.com", "rep", now=runtime.now()).id
        ops = add_user(session, "ops@example.com", "ops", now=runtime.now()).id
    run_import(runtime, "email,owner\nana@example.com,\nbob@example.com,OPS@example.com\n", owner_email="rep@example.com")
    leads = leads_by_email(runtime)
    assert (leads["ana@example.com"].owner_id, leads["bob@example.com"].owner_id) == (rep, ops)


def test_not_utf8_is_a_file_error(runtime, tmp_path: Path) -> None:
    path = tmp_path / "latin1.csv"
    path.write_bytes("email,last_name\nana@example.com,Müller\n".encode("latin-1"))
    with runtime.session() as session, pytest.raises(CsvFormatError, match="latin1.csv.*not UTF-8"):
        import_leads(session, path, now=runtime.now(), default_region="US")


def test_dry_run_writes_nothing(cli, runtime) -> None:
    cli("users", "add", "rep@example.com", "--role", "rep")
    result = cli("leads", "import", "--dry-run", str(DATA / "leads_broken.csv"), expect=1)
    assert result.output.splitlines()[-1] == "imported 7, updated 0, rejected 4 (dry run: nothing was written)"
    with runtime.session() as session:
        assert session.scalar(sa.select(sa.func.count()).select_from(Lead)) == 0
        assert session.scalar(sa.select(sa.func.count()).where(AuditEntry.action == "leads.import")) == 0
    cli("leads", "import", str(DATA / "leads_broken.csv"), expect=1)
    with runtime.session() as session:
        assert session.scalar(sa.select(sa.func.count()).select_from(Lead)) == 7
        assert session.scalar(sa.select(sa.func.count()).where(AuditEntry.action == "leads.import")) == 1


def test_progress_bar_goes_to_stderr(runtime, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "leads.csv"
    path.write_text("email\n" + "".join(f"lead{i}@example.com\n" for i in range(20)), encoding="utf-8")
    with runtime.session() as session:
        import_leads(session, path, now=runtime.now(), default_region="US", progress=True)
    captured = capsys.readouterr()
    assert "20/20" in captured.err and captured.out == ""


def big_csv(path: Path, rows: int, *, title: str, prefix: str = "lead") -> Path:
    with path.open("w", encoding="utf-8") as f:
        f.write("external_id,email,phone,first_name,company,title,country,segment\n")
        for i in range(rows):
            f.write(f"{prefix}-{i},{prefix}{i}@company{i % 97}.example.com,+1 212 736 {i % 10000:04d},Lead {i},"
                    f"Company {i % 97},{title},US,seg-{i % 5}\n")
    return path


def test_statements_grow_with_chunks_not_rows(runtime, tmp_path: Path) -> None:
    statements = count_statements(runtime.engine)
    with runtime.session() as session:
        report = import_leads(session, big_csv(tmp_path / "new.csv", 1500, title="VP"), now=runtime.now(),
                              default_region="US")
    assert report.imported == 1500
    verbs = Counter(s.split()[0].upper() for s in statements)
    # Users once; then per chunk of 500 one duplicate lookup and one suppression check.
    assert verbs["SELECT"] == 1 + 3 * 2
    if runtime.engine.dialect.name == "postgresql":
        # Multi-row INSERTs; SQLite gets one INSERT per row (SQLAlchemy cannot match RETURNING
        # rows to objects there without a sentinel column), which costs no round trip in-process.
        assert verbs["INSERT"] <= 3 * 2
    statements[:] = []
    with runtime.session() as session:
        report = import_leads(session, big_csv(tmp_path / "again.csv", 1500, title="CEO"), now=runtime.now(),
                              default_region="US")
    assert (report.imported, report.updated) == (0, 1500)
    verbs = Counter(s.split()[0].upper() for s in statements)
    assert verbs["SELECT"] == 1 + 3 * 2
    # Changed rows go out as one executemany per chunk, never as a statement per row.
    assert verbs["UPDATE"] <= 3
    with runtime.session() as session:
        assert session.scalar(sa.select(sa.func.count()).where(Lead.title == "CEO")) == 1500


def test_an_unknown_cadence_stops_the_import_before_it_writes(cli, runtime) -> None:
    result = cli("leads", "import", "--cadence", "Nope", str(DATA / "leads_bom_semicolon.csv"), expect=1)
    assert "cadence 'Nope' does not exist" in result.output
    with runtime.session() as session:
        assert session.scalar(sa.select(sa.func.count()).select_from(Lead)) == 0


def test_leads_list_table(cli) -> None:
    cli("leads", "import", str(DATA / "leads_bom_semicolon.csv"))
    header, row = cli("leads", "list").output.splitlines()
    assert header.split() == ["ID", "EMAIL", "PHONE", "NAME", "COMPANY", "COUNTRY", "TIMEZONE", "TIMEZONE_SOURCE",
                              "OWNER"]
    assert row.split() == ["1", "bom@example.com", "Bo", "Martin", "unknown"]


# Consent columns (COMPLIANCE.md rule 9)

CONSENT_CSV = """email,phone,consent_sms,consent_voice
ann@example.com,+12125550100,web form 2024-03-01,
ben@example.com,+12125550101,Yes,No
cy@example.com,+12125550102,FALSE,0
dee@example.com,+12125550103,,recorded call 2025-06-30T15:00:00-04:00
"""


def consent_records(runtime) -> dict[str, dict]:
    with runtime.session() as session:
        return {lead.email: lead.consents for lead in session.scalars(sa.select(Lead).order_by(Lead.id))}


def test_consent_cells_record_consent_with_the_cell_as_source_and_its_date(cli, runtime, tmp_path: Path,
                                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SEQUENCER_ACTOR", "ops@example.com")
    path = tmp_path / "leads.csv"
    path.write_text(CONSENT_CSV, encoding="utf-8")
    result = cli("leads", "import", str(path), now="2026-03-02T14:00:00Z")
    assert result.output.splitlines()[-2:] == ["imported 4, updated 0, rejected 0",
                                               "recorded 3 consent(s); resumed 0 enrollment(s) that waited for one"]
    by = "ops@example.com, import of leads.csv"
    now = "2026-03-02T14:00:00Z"
    record = {"recorded_by": by, "recorded_at": now, "revoked_by": None, "revoked_at": None}
    assert consent_records(runtime) == {
        "ann@example.com": {"sms": {"source": "web form 2024-03-01", "given_at": "2024-03-01T00:00:00Z", **record}},
        # No date in the cell: the consent counts from the import.
        "ben@example.com": {"sms": {"source": "Yes", "given_at": now, **record}},
        # no / false / 0 record nothing.
        "cy@example.com": {},
        "dee@example.com": {"voice": {"source": "recorded call 2025-06-30T15:00:00-04:00",
                                      "given_at": "2025-06-30T19:00:00Z", **record}},
    }
    with runtime.session() as session:
        assert all("consent_sms" not in lead.custom and "consent_voice" not in lead.custom
                   for lead in session.scalars(sa.select(Lead)))
        audited = session.scalars(sa.select(AuditEntry.object_id).where(AuditEntry.action == "consent.add")
                                  .order_by(AuditEntry.object_id)).all()
    assert audited == ["1", "2", "4"]


def test_reimporting_keeps_consents_and_no_does_not_revoke(runtime) -> None:
    run_import(runtime, CONSENT_CSV)
    before = consent_records(runtime)
    runtime.clock.advance(timedelta(days=7))
    report = run_import(runtime, "email,consent_sms,consent_voice\nann@example.com,web form 2024-03-01,\n"
                                 "ben@example.com,no,\ndee@example.com,,\n")
    # The same source again changes nothing; an empty cell changes nothing.
    assert consent_records(runtime) == before
    assert report.consents == 0
    assert [str(w) for w in report.warnings] == [
        "3: consent_sms 'no' leaves the lead's sms consent as it is; `sequencer consent remove` revokes it"]
    with runtime.session() as session:
        assert session.scalar(sa.select(sa.func.count()).where(AuditEntry.action == "consent.add")) == 3
    report = run_import(runtime, "email,consent_sms\nann@example.com,signed contract 2026-03-05\n")
    assert report.consents == 1
    assert consent_records(runtime)["ann@example.com"]["sms"]["source"] == "signed contract 2026-03-05"


@pytest.mark.parametrize(("cell", "message"), [
    ("form 2024-02-30", "2: consent_sms 'form 2024-02-30': '2024-02-30' is not a valid date; write it as YYYY-MM-DD"),
    ("form 2026-03-03", "2: consent_sms 'form 2026-03-03': '2026-03-03' is after the import (2026-03-02T14:00:00Z); "
                        "give the date the consent was given"),
])
def test_a_consent_cell_with_a_bad_date_rejects_the_row(runtime, cell: str, message: str) -> None:
    report = run_import(runtime, f"email,consent_sms\nann@example.com,{cell}\nben@example.com,web\n")
    assert [str(p) for p in report.rejected] == [message]
    assert consent_records(runtime) == {"ben@example.com": consent_records(runtime)["ben@example.com"]}


def test_dry_run_records_no_consent(runtime) -> None:
    report = run_import(runtime, CONSENT_CSV, dry_run=True)
    assert report.consents == 3
    with runtime.session() as session:
        assert session.scalar(sa.select(sa.func.count()).select_from(Lead)) == 0
        assert session.scalar(sa.select(sa.func.count()).select_from(AuditEntry)) == 0


def test_imported_consent_resumes_enrollments_waiting_for_it(cli, runtime, tmp_path: Path) -> None:
    team(cli)
    apply(cli, tmp_path, 'name = "texts"\n' + ALWAYS_OPEN + '[[steps]]\nkey = "text"\nchannel = "sms"\nbody = "Hi."\n')
    enroll_csv(cli, tmp_path, [f"ann@example.com,+12125550100,{REP}", f"ben@example.com,+12125550101,{REP}"],
               "texts", header="email,phone,owner")
    with runtime.session() as session:
        session.execute(sa.update(Enrollment).values(state="paused", paused_reason=NO_CONSENT, next_due_at=None))
    path = tmp_path / "consents.csv"
    path.write_text("email,consent_sms,consent_voice\nann@example.com,web form,\nben@example.com,,call\n")
    result = cli("leads", "import", str(path), now="2026-03-04T10:00:00Z")
    assert result.output.splitlines()[-1] == "recorded 2 consent(s); resumed 1 enrollment(s) that waited for one"
    with runtime.session() as session:
        states = dict(session.execute(sa.select(Lead.email, Enrollment.state).join(Enrollment.lead)).all())
        due = session.scalar(sa.select(Enrollment.next_due_at).join(Enrollment.lead)
                             .where(Lead.email == "ann@example.com"))
    assert states == {"ann@example.com": "active", "ben@example.com": "paused"}
    assert due == utc("2026-03-04T10:00:00Z")


def test_consent_columns_keep_statements_per_chunk(runtime, tmp_path: Path) -> None:
    path = tmp_path / "consents.csv"
    with path.open("w", encoding="utf-8") as f:
        f.write("email,phone,consent_sms\n")
        for i in range(1500):
            f.write(f"lead{i}@example.com,+1 212 736 {i:04d},web form 2025-0{i % 9 + 1}-01\n")
    statements = count_statements(runtime.engine)
    with runtime.session() as session:
        report = import_leads(session, path, now=runtime.now(), default_region="US")
    assert report.consents == 1500
    verbs = Counter(s.split()[0].upper() for s in statements)
    assert verbs["SELECT"] == 1 + 3 * 2
    # Per chunk: the consents as one executemany (written after the flush that gives the audit
    # log its lead ids), and one resume per channel.
    assert verbs["UPDATE"] == 3 * 2
    if runtime.engine.dialect.name == "postgresql":
        assert verbs["INSERT"] <= 3 * 2
