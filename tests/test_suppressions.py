"""Suppressions: normalization, set-based blocking by hash, channel scope, CSV import, survival of re-import."""
from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest
import sqlalchemy as sa

from sequencer import suppressions
from sequencer.leads import LeadDataError
from sequencer.models import Enrollment, Lead, Suppression, Task
from sequencer.testing.world import CALLS, REP, apply, enroll_csv, team

DATA = Path(__file__).parent / "data" / "csv"


@pytest.mark.parametrize(("kind", "value", "expected"), [
    ("email", " Jane.Doe@Example.COM ", "jane.doe@example.com"),
    ("phone", "+1 (212) 736-5000", "+12127365000"),
    ("domain", "@Example.COM", "example.com"),
    ("domain", "BÜCHER.de.", "bücher.de"),
])
def test_normalize(kind: str, value: str, expected: str) -> None:
    assert suppressions.normalize(kind, value) == expected


def test_normalize_rejects_bad_values_by_name() -> None:
    with pytest.raises(LeadDataError, match="domain 'not a domain' is not valid"):
        suppressions.normalize("domain", "not a domain")
    with pytest.raises(LeadDataError, match="suppression kind 'fax' is unknown"):
        suppressions.normalize("fax", "123")


@pytest.mark.parametrize(("value", "kind"), [
    ("jane@example.com", "email"), ("+49 30 1234567", "phone"), ("2127365000", "phone"),
    ("example.com", "domain"), ("@example.com", "domain"), ("3m.com", "domain"),
])
def test_detect_kind(value: str, kind: str) -> None:
    assert suppressions.detect_kind(value) == kind


def make_lead(session, email: str | None = None, phone: str | None = None, now=None) -> Lead:
    lead = Lead(email=email, email_normalized=email.lower() if email else None, phone=phone,
                domain=email.rsplit("@", 1)[1].lower() if email else None, created_at=now, updated_at=now)
    session.add(lead)
    session.flush()
    return lead


def test_add_is_idempotent_and_remove_lifts_it(runtime) -> None:
    now = runtime.now()
    with runtime.session() as session:
        first = suppressions.add(session, "email", "Jane@Example.com", reason="asked", source="manual", now=now)
        again = suppressions.add(session, "email", "jane@example.com", reason="other", source="manual", now=now)
        sms = suppressions.add(session, "email", "jane@example.com", reason="", source="manual", now=now,
                               channel="sms")
        assert again.id == first.id and again.reason == "asked" and sms.id != first.id
        assert first.value_hash == suppressions.value_hash("jane@example.com")
        assert [s.id for s in suppressions.list_(session)] == [first.id, sms.id]
        assert suppressions.remove(session, "email", "JANE@example.com") is True
        assert suppressions.remove(session, "email", "jane@example.com") is False
        assert [s.channel for s in suppressions.list_(session)] == ["sms"]


def test_blocked_leads_by_email_domain_phone_and_channel(runtime) -> None:
    now = runtime.now()
    with runtime.session() as session:
        by_email = make_lead(session, "jane@example.com", now=now)
        by_domain = make_lead(session, "ceo@competitor.com", now=now)
        by_parent = make_lead(session, "cfo@eu.Competitor.com", now=now)
        lookalike = make_lead(session, "cto@notcompetitor.com", now=now)
        by_phone = make_lead(session, None, "+12127365000", now=now)
        sms_only = make_lead(session, "sam@example.org", "+12127365001", now=now)
        clean = make_lead(session, "ok@example.net", "+12127365002", now=now)
        for kind, value, channel in [("email", "jane@example.com", "all"), ("domain", "Competitor.com", "all"),
                                     ("phone", "+1 212 736 5000", "all"), ("phone", "+12127365001", "sms")]:
            suppressions.add(session, kind, value, reason="test", source="manual", now=now, channel=channel)
        leads = [by_email, by_domain, by_parent, lookalike, by_phone, sms_only, clean]
        on_email = suppressions.blocked_leads(session, leads, "email")
        assert set(on_email) == {by_email.id, by_domain.id, by_parent.id, by_phone.id}
        assert on_email[by_domain.id] == on_email[by_parent.id] == \
            "domain competitor.com is suppressed on all channels: test"
        assert set(suppressions.blocked_leads(session, leads, "sms")) == {
            by_email.id, by_domain.id, by_parent.id, by_phone.id, sms_only.id}
        assert suppressions.is_blocked(session, sms_only, "sms") == "phone +12127365001 is suppressed on sms: test"
        assert suppressions.is_blocked(session, sms_only, "email") is None
        assert suppressions.is_blocked(session, clean, "all") is None
        # Manual task steps and plugin channels are covered by "all" suppressions too.
        assert set(suppressions.blocked_leads(session, leads, "task")) == {
            by_email.id, by_domain.id, by_parent.id, by_phone.id}
        assert suppressions.blocked_leads(session, [], "email") == {}


def test_an_erased_entry_still_blocks_by_hash(runtime) -> None:
    now = runtime.now()
    with runtime.session() as session:
        entry = suppressions.add(session, "email", "gone@example.com", reason="erasure", source="gdpr", now=now)
        entry.value = None  # what erasure leaves: the hash only
        lead = make_lead(session, "Gone@Example.com", now=now)
        assert suppressions.is_blocked(session, lead, "email") == "email (erased) is suppressed on all channels: erasure"


@pytest.mark.parametrize("size", [10, 200])
def test_blocked_leads_runs_one_statement_whatever_the_batch(runtime, size: int) -> None:
    now = runtime.now()
    with runtime.session() as session:
        leads = [make_lead(session, f"lead{i}@company{i % 7}.example.com", f"+1212736{i:04d}", now=now)
                 for i in range(size)]
        suppressions.add(session, "domain", "company3.example.com", reason="", source="manual", now=now)
        statements: list[str] = []
        listener = lambda conn, cursor, statement, *rest: statements.append(statement)  # noqa: E731
        sa.event.listen(runtime.engine, "before_cursor_execute", listener)
        try:
            blocked = suppressions.blocked_leads(session, leads, "email")
        finally:
            sa.event.remove(runtime.engine, "before_cursor_execute", listener)
    assert len(statements) == 1
    assert set(blocked) == {lead.id for i, lead in enumerate(leads) if i % 7 == 3}


def test_blocked_leads_takes_batches_beyond_the_bound_variable_limit(runtime) -> None:
    # 20,000 leads x 3 keys is more than SQLite's 32,766 bound variables: the hashes travel as one value.
    now = runtime.now()
    leads = [Lead(id=i, email=f"l{i}@d{i}.example.com", email_normalized=f"l{i}@d{i}.example.com",
                  domain=f"d{i}.example.com", phone=f"+1212736{i % 10000:04d}") for i in range(20000)]
    with runtime.session() as session:
        suppressions.add(session, "email", "l19999@d19999.example.com", reason="", source="manual", now=now)
        assert list(suppressions.blocked_leads(session, leads, "voice")) == [19999]


def test_suppression_survives_reimport_and_flags_the_lead(cli, runtime, tmp_path: Path) -> None:
    cli("suppress", "add", "Jane@Example.com", "--reason", "asked to stop")
    csv_file = tmp_path / "leads.csv"
    csv_file.write_text("email,first_name\njane@example.com,Jane\nbob@example.com,Bob\n", encoding="utf-8")
    for _ in range(2):
        output = cli("leads", "import", str(csv_file)).output.splitlines()
        assert "2: suppressed, not enrollable: email jane@example.com is suppressed on all channels: " \
               "asked to stop" in output
    with runtime.session() as session:
        assert [(s.kind, s.value) for s in suppressions.list_(session)] == [("email", "jane@example.com")]
        jane = session.scalar(sa.select(Lead).where(Lead.email_normalized == "jane@example.com"))
        assert suppressions.is_blocked(session, jane, "email")


def test_domain_suppression_blocks_imported_leads_at_that_domain(runtime) -> None:
    import io

    from sequencer.importer import import_leads

    now = runtime.now()
    with runtime.session() as session:
        suppressions.add(session, "domain", "competitor.com", reason="competitor", source="manual", now=now)
        report = import_leads(session, io.StringIO("email\nceo@Competitor.com\nana@example.com\n"), now=now,
                              default_region="US")
    assert len(report.lead_ids) == 2 and len(report.enrollable_ids) == 1
    assert list(report.not_enrollable.values()) == ["domain competitor.com is suppressed on all channels: competitor"]
    assert [str(p) for p in report.suppressed] == [
        "2: domain competitor.com is suppressed on all channels: competitor"]


def test_suppress_import_keeps_good_lines_and_reports_bad_ones(cli, runtime) -> None:
    result = cli("suppress", "import", str(DATA / "suppressions.csv"), expect=1)
    lines = result.output.splitlines()
    assert lines[0].startswith("4: email 'not an email@@' is not valid")
    assert lines[1] == "6: no value; fill one of the columns value"
    assert lines[-1] == "added 4, already suppressed 0, rejected 2"
    with runtime.session() as session:
        stored = {(s.kind, s.value, s.reason, s.source) for s in suppressions.list_(session)}
    assert stored == {("email", "gone@example.com", "asked", "import"), ("domain", "competitor.com", "competitor", "import"),
                      ("phone", "+12127365000", "wrong number", "import"), ("email", "other@example.com", "", "import")}
    again = cli("suppress", "import", str(DATA / "suppressions.csv"), expect=1)
    assert again.output.splitlines()[-1] == "added 0, already suppressed 4, rejected 2"


def test_suppress_import_with_kind_columns(runtime, tmp_path: Path) -> None:
    path = tmp_path / "s.csv"
    path.write_text("email,phone,domain,reason,channel\na@example.com,+12127365000,,bounced,\n,,spam.com,,email\n"
                    ",+12127365001,,,fax\n", encoding="utf-8")
    with runtime.session() as session:
        report = suppressions.import_csv(session, path, now=runtime.now(), source="import")
        assert (report.added, [str(p) for p in report.rejected]) == (
            3, ["4: channel 'fax' is unknown; use one of all, email, sms, voice"])
        assert {(s.kind, s.channel) for s in suppressions.list_(session)} == {
            ("email", "all"), ("phone", "all"), ("domain", "email")}


def test_suppress_cli_add_list_remove(cli) -> None:
    assert cli("suppress", "add", "@Competitor.com", "--reason", "competitor", now="2026-03-02T15:00:00+01:00").output == \
        "suppressed: domain competitor.com on all channels\n"
    assert cli("suppress", "add", "competitor.com").output.startswith("already suppressed: domain competitor.com")
    assert cli("suppress", "add", "+1 212 736 5000", "--channel", "sms").output == \
        "suppressed: phone +12127365000 on sms\n"
    assert cli("suppress", "add", "2127365001", "--channel", "voice").output == \
        "suppressed: phone +12127365001 on voice\n"  # the configured default_region (US)
    listed = json.loads(cli("suppress", "list", "--format", "json").output)
    assert [(r["kind"], r["value"], r["channel"], r["reason"]) for r in listed] == [
        ("domain", "competitor.com", "all", "competitor"), ("phone", "+12127365000", "sms", ""),
        ("phone", "+12127365001", "voice", "")]
    assert listed[0]["created_at"] == "2026-03-02T14:00:00Z"
    cli("suppress", "remove", "+12127365000", "--channel", "sms")
    result = cli("suppress", "remove", "+12127365000", expect=1)
    assert "phone +12127365000 is not suppressed on all channels" in result.output
    result = cli("suppress", "add", "not a domain", expect=1)
    assert "domain 'not a domain' is not valid" in result.output
    assert Counter(r["kind"] for r in json.loads(cli("suppress", "list", "--format", "json").output)) == {
        "domain": 1, "phone": 1}


def test_only_hashes_match(runtime) -> None:
    now = runtime.now()
    with runtime.session() as session:
        suppressions.add(session, "email", "jane@example.com", reason="", source="manual", now=now)
        stored = session.scalar(sa.select(Suppression))
        assert stored.value_hash == suppressions.value_hash("jane@example.com") and len(stored.value_hash) == 64


# Enforcing a new suppression on the leads already in cadences

START = "2026-03-02T15:00:00Z"


@pytest.fixture
def calling(cli, tmp_path: Path, smtp_sink) -> None:
    """A rep, a call-then-email cadence, and three enrolled leads, each with an open call task."""
    team(cli, REP)
    apply(cli, tmp_path, CALLS)
    enroll_csv(cli, tmp_path, [f"ann@a.example,+12125550101,Ann,{REP}", f"bob@eu.competitor.example,+12125550102,Bob,{REP}",
                               f"cy@c.example,+12125550103,Cy,{REP}"],
               "calls", now=START, header="email,phone,first_name,owner")
    cli("worker", "--once", now=START)


def states(runtime) -> dict[str, tuple]:  # noqa: ANN001
    """lead email -> (enrollment state, exit reason, [(task state, task notes)])."""
    with runtime.session() as session:
        rows = session.execute(sa.select(Lead.email, Enrollment.state, Enrollment.exit_reason, Enrollment.id)
                               .join(Enrollment, Enrollment.lead_id == Lead.id)).all()
        tasks = session.execute(sa.select(Task.enrollment_id, Task.state, Task.notes).order_by(Task.id)).all()
    return {email: (str(state), reason, [(t.state, t.notes) for t in tasks if t.enrollment_id == eid])
            for email, state, reason, eid in rows}


def test_suppress_add_ends_the_lead_s_enrollments_and_closes_its_tasks_with_the_reason(cli, runtime, calling,
                                                                                         smtp_sink) -> None:
    result = cli("suppress", "add", "Ann@A.example", "--reason", "asked by phone", now="2026-03-02T16:00:00Z")
    assert result.output.splitlines() == ["suppressed: email ann@a.example on all channels",
                                          "ended 1 enrollment(s), closed 1 open task(s)"]
    reason = "suppressed: email ann@a.example is suppressed on all channels: asked by phone"
    now = states(runtime)
    assert now["ann@a.example"] == ("removed", reason, [("skipped", reason)])
    assert now["cy@c.example"] == ("waiting_task", None, [("open", None)])
    listed = json.loads(cli("tasks", "--format", "json", now="2026-03-02T16:00:00Z").output)
    assert sorted(t["lead_email"] for t in listed) == ["bob@eu.competitor.example", "cy@c.example"]
    timeline = json.loads(cli("timeline", "ann@a.example", "--format", "json").output)
    assert {"kind": "exited", "detail": reason} in [{"kind": r["kind"], "detail": r["detail"]} for r in timeline]
    assert any(r["kind"] == "task_skipped" and reason in r["detail"] for r in timeline)
    # Adding it again finds nothing left to end.
    assert cli("suppress", "add", "ann@a.example").output == "already suppressed: email ann@a.example on all channels\n"
    cli("worker", "--once", now="2026-03-04T16:00:00Z")
    assert all("ann@a.example" not in m["To"] for m in smtp_sink.messages())


def test_suppress_import_ends_leads_by_domain_subdomain_and_phone(cli, runtime, calling, tmp_path: Path) -> None:
    path = tmp_path / "dnc.csv"
    path.write_text("value,reason\ncompetitor.example,competitor\n+1 212 555 0103,do not call\n", encoding="utf-8")
    result = cli("suppress", "import", str(path), now="2026-03-02T16:00:00Z")
    assert result.output.splitlines()[-1] == "ended 2 enrollment(s), closed 2 open task(s)"
    now = states(runtime)
    reason = "suppressed: listed in the suppression import dnc.csv"
    assert now["bob@eu.competitor.example"][:2] == now["cy@c.example"][:2] == ("removed", reason)
    assert now["ann@a.example"][0] == "waiting_task"


def test_channel_scoped_suppression_ends_only_enrollments_whose_next_step_is_on_that_channel(
        cli, runtime, calling, smtp_sink) -> None:
    # Ann's next step is a call: a voice suppression ends her enrollment and closes the call task now.
    out = cli("suppress", "add", "+12125550101", "--channel", "voice", now="2026-03-02T16:00:00Z").output
    assert out.endswith("ended 1 enrollment(s), closed 1 open task(s)\n")
    # A text suppression does not cover calls; an email one waits for the email step.
    for value, channel in (("+12125550102", "sms"), ("bob@eu.competitor.example", "email")):
        assert "ended" not in cli("suppress", "add", value, "--channel", channel, now="2026-03-02T16:00:00Z").output
    now = states(runtime)
    assert now["ann@a.example"][0] == "removed" and "on voice" in now["ann@a.example"][1]
    assert now["bob@eu.competitor.example"] == ("waiting_task", None, [("open", None)])
    [bob_task] = [t for t in json.loads(cli("tasks", "--format", "json", now="2026-03-02T16:00:00Z").output)
                  if t["lead_email"] == "bob@eu.competitor.example"]
    cli("task", "done", str(bob_task["id"]), "--outcome", "connected", now="2026-03-02T16:00:00Z")
    cli("worker", "--once", now="2026-03-03T17:00:00Z")
    # The engine ends Bob's enrollment when the email step comes, as documented: no email goes out.
    assert states(runtime)["bob@eu.competitor.example"][0] == "removed"
    assert "email bob@eu.competitor.example is suppressed on email" in states(runtime)["bob@eu.competitor.example"][1]
    assert smtp_sink.messages() == []


@pytest.mark.parametrize("count", [20, 200])
def test_enforce_runs_a_fixed_number_of_statements_whatever_the_list(cli, runtime, tmp_path: Path, smtp_sink,
                                                                     count: int) -> None:
    team(cli, REP)
    apply(cli, tmp_path, CALLS)
    enroll_csv(cli, tmp_path, [f"lead{i}@sub.d{i}.example,+1212555{i:04d},L{i},{REP}" for i in range(count)],
               "calls", now=START, header="email,phone,first_name,owner")
    entries = [("domain", f"d{i}.example", "all") for i in range(0, count, 2)] + \
              [("phone", f"+1212555{i:04d}", "all") for i in range(1, count, 2)] + \
              [("email", "nobody@nowhere.example", "all")]
    statements: list[str] = []
    listener = lambda conn, cursor, statement, *rest: statements.append(statement)  # noqa: E731
    with runtime.session() as session:
        sa.event.listen(runtime.engine, "before_cursor_execute", listener)
        try:
            done = suppressions.enforce(session, entries, reason="test", now=runtime.now())
        finally:
            sa.event.remove(runtime.engine, "before_cursor_execute", listener)
    assert (done.enrollments_ended, done.tasks_closed) == (count, 0)
    # The distinct domains in play, the open tasks, the enrollments, ending them (and their tasks).
    assert len([s for s in statements if not s.startswith("BEGIN")]) == 5
