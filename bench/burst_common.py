"""Helpers shared by bench/burst.py and bench/apscheduler_per_job.py (not a benchmark itself).

* `write_worker_config`: bench/common.write_config plus a short `[engine] tick_seconds`;
* CPU accounting from /proc (no psutil needed): a process's own utime+stime, and a PostgreSQL
  cluster's total (postmaster, its reaped children via cutime+cstime, and its live children);
* `load_average()`: /proc/loadavg, printed next to every figure because the benchmarks share the machine;
* `send_one`: the irreducible work of one touch done by hand (render, build the MIME message the
  email channel builds, send it over SMTP, insert a touches row), for the per-job APScheduler design.
"""
from __future__ import annotations

import html
import os
import smtplib
import time
from dataclasses import dataclass
from email.message import EmailMessage
from email.utils import format_datetime, make_msgid
from pathlib import Path
from typing import Any

from common import BASE_URL, BODY, MAILBOX, POSTAL_ADDRESS, SECRET_KEY, SUBJECT, utcnow, write_config

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def write_worker_config(path: Path, *, db_url: str, smtp_port: int, batch_size: int, tick_seconds: float) -> Path:
    """The benchmarks' config (nothing throttles, SMTP to the sink) with a short tick for `sequencer worker`."""
    write_config(path, db_url=db_url, smtp_port=smtp_port, batch_size=batch_size)
    text = path.read_text(encoding="utf-8")
    assert "[engine]\n" in text, "bench/common.write_config no longer writes an [engine] table"
    path.write_text(text.replace("[engine]\n", f"[engine]\ntick_seconds = {tick_seconds}\n", 1), encoding="utf-8")
    return path


def load_average() -> str:
    try:
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        return "n/a"


# -- CPU from /proc --------------------------------------------------------------------------------


def _stat(pid: int) -> list[str] | None:
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name (field 2) is in parentheses and may hold spaces: split after the last ')'.
    return raw[raw.rindex(")") + 2:].split()


def process_cpu(pid: int, *, children: bool = False) -> float:
    """CPU seconds (user + system) used so far by a process; with children=True also its reaped children."""
    fields = _stat(pid)
    if fields is None:
        return 0.0
    # After the name: state(0) ppid(1) ... utime(11) stime(12) cutime(13) cstime(14)
    ticks = int(fields[11]) + int(fields[12])
    if children:
        ticks += int(fields[13]) + int(fields[14])
    return ticks / CLOCK_TICKS


def children_of(pid: int) -> list[int]:
    out = []
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            fields = _stat(int(entry.name))
            if fields is not None and int(fields[1]) == pid:
                out.append(int(entry.name))
    return out


def postmaster_pid(data_dir: Path) -> int | None:
    try:
        return int((data_dir / "postmaster.pid").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


class ClusterCpu:
    """CPU used by a PostgreSQL cluster: the postmaster, every backend and auxiliary process.

    Backends that exited were reaped by the postmaster, so their time is in its cutime/cstime;
    live ones are read directly. Take `sample()` before and after; the difference is the cluster's CPU.
    """

    def __init__(self, data_dir: Path | None) -> None:
        self.pid = postmaster_pid(data_dir) if data_dir else None

    def sample(self) -> float:
        if self.pid is None:
            return 0.0
        return process_cpu(self.pid, children=True) + sum(process_cpu(child) for child in children_of(self.pid))


# -- the irreducible work of one touch, by hand -----------------------------------------------------


@dataclass
class Lead:
    enrollment_id: int
    lead_id: int
    email: str
    first_name: str
    last_name: str
    company: str | None
    domain: str | None
    title: str | None
    country: str | None
    timezone: str | None
    external_id: str | None
    phone: str | None = None


OWNER = {"name": "Rita Rep", "first_name": "Rita", "last_name": "Rep", "email": MAILBOX}
SENDER = {"address": MAILBOX, "email": MAILBOX, "display_name": "Rita Rep", "name": "Rita Rep"}


def build_message(renderer: Any, lead: Lead, step_key: str) -> tuple[EmailMessage, dict[str, Any]]:
    """Render the bench template for one lead and build the message the bare loops send.

    The same multipart message as the email channel (its policy and headers); used by
    bench/dispatch.py, bench/burst.py and the APScheduler jobs. Returns the message and the
    touches row to insert.
    """
    from sequencer_email.message import POLICY
    from sequencer.optouts import unsubscribe_url
    from sequencer.rendering import build_context

    unsubscribe = unsubscribe_url(BASE_URL, SECRET_KEY, lead.lead_id)
    context_lead = {"email": lead.email, "phone": lead.phone, "external_id": lead.external_id,
                    "first_name": lead.first_name, "last_name": lead.last_name, "company": lead.company,
                    "domain": lead.domain, "title": lead.title, "country": lead.country, "timezone": lead.timezone,
                    "full_name": f"{lead.first_name} {lead.last_name}", "custom_fields": {}}
    context = build_context(lead=context_lead, owner=OWNER, sender=SENDER, extra={"unsubscribe_url": unsubscribe})
    rendered = renderer.render_email(subject=SUBJECT, template=None, body=BODY, context=context)
    text = f"{rendered.text}\n\n{POSTAL_ADDRESS}\nUnsubscribe: {unsubscribe}\n"
    link = html.escape(unsubscribe, quote=True)
    body_html = (f'{rendered.html}\n<p style="font-size:12px;color:#666666">{html.escape(POSTAL_ADDRESS)}<br>'
                 f'Unsubscribe: <a href="{link}">{link}</a></p>\n')
    message_id = make_msgid(idstring=f"j{lead.enrollment_id}.{step_key}", domain="bench.example")
    message = EmailMessage(policy=POLICY)
    message["From"] = "Rita Rep <rep@bench.example>"
    message["To"] = f"{lead.first_name} {lead.last_name} <{lead.email}>"
    message["Subject"] = rendered.subject or ""
    message["Date"] = format_datetime(utcnow())
    message["Message-ID"] = message_id
    message["List-Unsubscribe"] = f"<{unsubscribe}>"
    message["List-Unsubscribe-Post"] = "List-Unsubscribe=One-Click"
    message.set_content(text)
    message.add_alternative(body_html, subtype="html")
    row = {"enrollment_id": lead.enrollment_id, "step_key": step_key, "lead_id": lead.lead_id, "channel": "email",
           "action": "auto", "status": "sent", "provider_status": "250 OK", "provider_id": message_id,
           "message_id": message_id, "subject": rendered.subject, "body_text": text, "body_html": body_html}
    return message, row


def send_one(renderer: Any, port: int, lead: Lead, step_key: str = "job") -> tuple[str, dict[str, Any]]:
    """Build one message and send it over its own SMTP connection (what one job per touch does)."""
    message, row = build_message(renderer, lead, step_key)
    with smtplib.SMTP("127.0.0.1", port, timeout=60) as smtp:
        smtp.sendmail(MAILBOX, [lead.email], message.as_bytes())
    return row["message_id"], row


def wait_until(predicate: Any, timeout: float, interval: float = 0.1) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return predicate()


# -- one APScheduler job per touch (bench/apscheduler_per_job.py) -----------------------------------


class _JobContext:
    """What the per-touch job needs, set up once per process (as a hand-built app would)."""

    engine: Any = None
    renderer: Any = None
    port: int = 0
    mailbox_id: int = 0
    done: int = 0
    lock: Any = None


JOB = _JobContext()


def configure_jobs(engine: Any, renderer: Any, port: int, mailbox_id: int) -> None:
    import threading

    JOB.engine, JOB.renderer, JOB.port, JOB.mailbox_id = engine, renderer, port, mailbox_id
    JOB.done, JOB.lock = 0, threading.Lock()


def per_job_touch(enrollment_id: int, lead_id: int, due_at: Any) -> None:
    """One APScheduler `date` job = one touch: read the lead, render, build, send (own SMTP connection), log."""
    import sqlalchemy as sa

    from sequencer.models import Lead as LeadRow
    from sequencer.models import Touch

    with JOB.engine.connect() as conn:
        r = conn.execute(sa.select(LeadRow.id, LeadRow.email, LeadRow.first_name, LeadRow.last_name, LeadRow.company,
                                   LeadRow.domain, LeadRow.title, LeadRow.country, LeadRow.timezone,
                                   LeadRow.external_id, LeadRow.phone).where(LeadRow.id == lead_id)).one()
    lead = Lead(enrollment_id, r.id, r.email, r.first_name, r.last_name, r.company, r.domain, r.title, r.country,
                r.timezone, r.external_id, r.phone)
    _, row = send_one(JOB.renderer, JOB.port, lead, "job")
    now = utcnow()
    row.update(mailbox_id=JOB.mailbox_id, due_at=due_at, sent_at=now, created_at=now, updated_at=now)
    with JOB.engine.begin() as conn:
        conn.execute(sa.insert(Touch), row)
    with JOB.lock:
        JOB.done += 1
