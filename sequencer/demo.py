"""Demo data: users of each role, mailboxes, two cadences (one in Russian) and leads around the world."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import sqlalchemy as sa

from sequencer import cadences
from sequencer.enrollments import enroll_leads
from sequencer.importer import import_leads
from sequencer.models import Mailbox, User
from sequencer.runtime import Runtime
from sequencer.users import add_mailbox, add_user, hash_password

USERS = [
    # email, role, name, time zone, mailbox display name
    ("admin@demo.example", "admin", "Ada Admin", "UTC", None),
    ("ops@demo.example", "ops", "Oscar Ops", "America/New_York", None),
    ("rita@demo.example", "rep", "Rita Rep", "America/New_York", "Rita Rep"),
    ("ivan@demo.example", "rep", "Иван Петров", "Europe/Moscow", "Иван Петров"),
]
# Printed by `demo load` so the app can be tried at once; the demo's users are for a local look only.
DEMO_PASSWORD = "demo-password"
CADENCE_LEADS = [("demo_en", "leads_en.csv"), ("demo_ru", "leads_ru.csv")]


@dataclass
class DemoReport:
    users: int = 0
    cadences: int = 0
    leads: int = 0
    enrolled: int = 0
    # (email, role) of every demo user who signs in with DEMO_PASSWORD.
    logins: list[tuple[str, str]] = field(default_factory=list)


def load_demo(runtime: Runtime, demo_dir: Path) -> DemoReport:
    """Load the demo; running it again adds nothing twice."""
    report = DemoReport()
    now = runtime.now()
    with runtime.session() as session:
        existing = {user.email: user for user in session.scalars(sa.select(User))}
        mailboxes = set(session.scalars(sa.select(Mailbox.address)))
        for email, role, name, zone, display in USERS:
            if email not in existing:
                add_user(session, email, role, name=name, timezone=zone, password=DEMO_PASSWORD, now=now)
                report.users += 1
            elif existing[email].password_hash is None:
                # Loaded before users could sign in.
                existing[email].password_hash = hash_password(DEMO_PASSWORD)
            report.logins.append((email, role))
            if display and email not in mailboxes:
                session.flush()
                add_mailbox(session, email, owner_email=email, display_name=display, now=now)
        for path in sorted((demo_dir / "cadences").glob("*.toml")):
            spec = cadences.parse_cadence(path.read_text(encoding="utf-8"), str(path))
            result = cadences.apply_cadence(session, spec, now=now, renderer=runtime.renderer)
            report.cadences += not result.unchanged
        for cadence_name, csv_name in CADENCE_LEADS:
            imported = import_leads(session, demo_dir / csv_name, now=now,
                                    default_region=runtime.settings.leads.default_region)
            report.leads += imported.imported
            enrolled = enroll_leads(session, lead_ids=imported.enrollable_ids, cadence_name=cadence_name, now=now)
            report.enrolled += len(enrolled.enrolled)
    return report
