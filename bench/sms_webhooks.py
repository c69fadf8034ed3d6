"""Inbound SMS webhooks per second through the production server, none lost.

Starts gunicorn with 2 sync workers serving `sequencer.web.wsgi:app` on loopback, [web] base_url
pointed at it, with N leads that have phone numbers. A client in this process then posts N
inbound texts to /hooks/sms/inbound, each from one lead to one of our numbers and signed as
Twilio signs (RequestValidator over base_url + path and the form, with [plugins.sms] auth_token;
signatures and request bytes are made before the clock starts), over bare sockets from a bounded
number of threads, each keeping at most one request in flight.

It reports the accepted rate (HTTP 200 answers per second of the whole loop) beside a
baseline measured first by the same server and client in the same run (GET /healthz: one
SELECT 1), then checks that every message is on a timeline: one sms reply event per
MessageSid, each with its lead. CPU ms per request is the CPU time gunicorn's master and
workers used (/proc, user + system) over the requests (the database server's own CPU is not in
it); the client's CPU is reported beside it.
Target: >= 300/s on PostgreSQL.

    .venv/bin/python bench/sms_webhooks.py                           # PostgreSQL, then SQLite
    .venv/bin/python bench/sms_webhooks.py --database postgresql --requests 10000
    .venv/bin/python bench/sms_webhooks.py --smoke --database sqlite # 200 requests (CI)

The last line of output is a JSON object with every figure. Exits 0 even when the target is missed.
"""
from __future__ import annotations

import argparse
import os
import secrets
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import databases, emit_json, load_world, verdict, write_config  # noqa: E402

import requests  # noqa: E402
from urllib.parse import urlencode  # noqa: E402
import sqlalchemy as sa  # noqa: E402
from twilio.request_validator import RequestValidator  # noqa: E402

from sequencer.db import make_engine  # noqa: E402
from sequencer.models import InboundEvent, Lead  # noqa: E402

TARGET = 300.0
OUR_NUMBERS = ("+14155550100", "+14155550101")
INBOUND_PATH = "/hooks/sms/inbound"
THREADS = 8
BODY = "Thanks for the text, can you send me the pricing?"
HEALTHZ = "GET /healthz HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\r\n"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def prepare(url: str, n: int) -> list[str]:
    """N leads, each with its own valid New York number; return the numbers."""
    load_world(url, leads=n, due=0)
    engine = make_engine(url)
    with engine.begin() as conn:
        conn.execute(sa.update(Lead).values(phone=sa.literal("+1") + sa.cast(Lead.id + 2122000000, sa.String)))
        phones = conn.execute(sa.select(Lead.phone).order_by(Lead.id)).scalars().all()
    engine.dispose()
    return list(phones)


def configure(config: Path, port: int, sid: str, token: str) -> None:
    """Point [web] base_url at the server and give the SMS plugin our numbers and the auth token."""
    text = config.read_text(encoding="utf-8")
    start = text.index("base_url = ")
    end = text.index("\n", start)
    config.write_text(text[:start] + f'base_url = "http://127.0.0.1:{port}"' + text[end:] + f"""
[plugins.sms]
account_sid = "{sid}"
auth_token = "{token}"
numbers = ["{OUR_NUMBERS[0]}", "{OUR_NUMBERS[1]}"]
help_text = "Bench: reply STOP to opt out."
""", encoding="utf-8")


class Gunicorn:
    """`gunicorn -w 2 sequencer.web.wsgi:app` on loopback, and the CPU time of its processes."""

    def __init__(self, config: Path, port: int) -> None:
        env = {**os.environ, "SEQUENCER_CONFIG": str(config)}
        self.proc = subprocess.Popen(
            [str(Path(sys.executable).parent / "gunicorn"), "--workers", "2", "--bind", f"127.0.0.1:{port}",
             "--log-level", "warning", "sequencer.web.wsgi:app"], env=env)
        deadline = time.monotonic() + 60
        while True:
            try:
                if requests.get(f"http://127.0.0.1:{port}/healthz", timeout=2).status_code < 500:
                    break
            except requests.ConnectionError:
                pass
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.close()
                raise SystemExit("gunicorn did not start serving /healthz (see its log above)")
            time.sleep(0.2)

    def pids(self) -> list[int]:
        children = Path(f"/proc/{self.proc.pid}/task/{self.proc.pid}/children").read_text().split()
        return [self.proc.pid, *map(int, children)]

    def cpu_seconds(self) -> float:
        """User + system CPU of the master and its workers so far."""
        ticks = os.sysconf("SC_CLK_TCK")
        total = 0
        for pid in self.pids():
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])  # utime, stime (fields 14 and 15 of proc(5))
        return total / ticks

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def signed_requests(base_url: str, token: str, phones: list[str]) -> list[tuple[str, dict[str, str], str]]:
    """One inbound text per lead: (MessageSid, form, signature), signed for base_url + INBOUND_PATH."""
    validator = RequestValidator(token)
    url = base_url + INBOUND_PATH
    out = []
    for i, phone in enumerate(phones):
        sid = "SM" + secrets.token_hex(16)
        form = {"AccountSid": "AC" + "0" * 32, "ApiVersion": "2010-04-01", "MessageSid": sid, "SmsMessageSid": sid,
                "SmsSid": sid, "From": phone, "To": OUR_NUMBERS[i % 2], "Body": BODY, "NumMedia": "0",
                "NumSegments": "1"}
        out.append((sid, form, validator.compute_signature(url, form)))
    return out


def encoded(port: int, batch: list[tuple[str, dict[str, str], str]]) -> list[bytes]:
    """Each request as the bytes of one HTTP/1.1 POST, built before the clock starts."""
    out = []
    for _, form, signature in batch:
        body = urlencode(form).encode()
        head = (f"POST {INBOUND_PATH} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
                f"Content-Type: application/x-www-form-urlencoded\r\nContent-Length: {len(body)}\r\n"
                f"X-Twilio-Signature: {signature}\r\nConnection: close\r\n\r\n")
        out.append(head.encode() + body)
    return out


def post_all(port: int, requests_: list[bytes]) -> tuple[float, dict[int, int]]:
    """Post every request from THREADS threads, one in flight each; return seconds and answers by status.

    A bare socket per request, as gunicorn's sync workers close every connection after answering:
    an HTTP library here would spend more of the two cores than the server it measures.
    """
    statuses: dict[int, int] = {}
    lock = threading.Lock()
    cursor = iter(requests_)

    def post(raw: bytes) -> int:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=60) as sock:
                sock.sendall(raw)
                answer = b""
                while chunk := sock.recv(65536):
                    answer += chunk
        except OSError:
            return 0  # no answer at all
        status_line = answer.split(b"\r\n", 1)[0].split()
        return int(status_line[1]) if len(status_line) > 1 and status_line[1].isdigit() else 0

    def client() -> None:
        while True:
            with lock:
                raw = next(cursor, None)
            if raw is None:
                return
            status = post(raw)
            with lock:
                statuses[status] = statuses.get(status, 0) + 1

    threads = [threading.Thread(target=client) for _ in range(THREADS)]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return time.perf_counter() - started, statuses


def run(kind: str, n: int) -> dict[str, Any]:
    with databases(kind) as dbs:
        url = dbs.create("webhooks")
        phones = prepare(url, n)
        port = free_port()
        config = write_config(dbs.dir / "config.toml", db_url=url, smtp_port=1)
        sid, token = "AC" + secrets.token_hex(16), secrets.token_hex(16)
        configure(config, port, sid, token)
        base_url = f"http://127.0.0.1:{port}"
        batch = signed_requests(base_url, token, phones)
        raw = encoded(port, batch)
        server = Gunicorn(config, port)
        try:
            # The baseline, same server, client and run: GET /healthz, one SELECT 1 and no signature.
            floor_seconds, floor_statuses = post_all(port, [HEALTHZ.format(port=port).encode()] * n)
            cpu_before, client_before = server.cpu_seconds(), time.process_time()
            seconds, statuses = post_all(port, raw)
            cpu, client_cpu = server.cpu_seconds() - cpu_before, time.process_time() - client_before
        finally:
            server.close()
        engine = make_engine(url)
        with engine.connect() as conn:
            recorded = conn.execute(sa.select(InboundEvent.message_id).where(
                InboundEvent.channel == "sms", InboundEvent.kind == "reply",
                InboundEvent.lead_id.is_not(None))).scalars().all()
        engine.dispose()
    accepted = statuses.get(200, 0)
    on_timeline = len(set(recorded) & {sid for sid, _, _ in batch})
    rate = accepted / seconds
    baseline = floor_statuses.get(200, 0) / floor_seconds
    result = {"database": kind, "requests": n, "accepted": accepted, "statuses": statuses,
              "baseline_healthz_rate": round(baseline, 1),
              "seconds": round(seconds, 3), "rate": round(rate, 1), "on_timeline": on_timeline,
              "lost": n - on_timeline, "duplicates": len(recorded) - len(set(recorded)),
              "cpu_ms_per_request": round(cpu * 1000 / n, 2),
              "client_cpu_ms_per_request": round(client_cpu * 1000 / n, 2), "gunicorn_workers": 2,
              "client_threads": THREADS}
    print(f"{kind}: {accepted:,} of {n:,} signed inbound texts accepted in {seconds:.2f} s = {rate:,.0f}/s "
          f"(answers {statuses}); {on_timeline:,} on a timeline, {n - on_timeline:,} lost; "
          f"gunicorn CPU {cpu * 1000 / n:.2f} ms per request (client {client_cpu * 1000 / n:.2f} ms); "
          f"baseline: GET /healthz {baseline:,.0f}/s", flush=True)
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=5_000, help="inbound texts to post (default 5,000)")
    parser.add_argument("--database", choices=("sqlite", "postgresql", "both"), default="both",
                        help="both: PostgreSQL (the target), then SQLite")
    parser.add_argument("--smoke", action="store_true", help="tiny size for CI: 200 requests")
    args = parser.parse_args()
    n = 200 if args.smoke else args.requests
    kinds = ("postgresql", "sqlite") if args.database == "both" else (args.database,)
    runs = {kind: run(kind, n) for kind in kinds}
    met = runs["postgresql"]["rate"] >= TARGET if "postgresql" in runs else None
    if met is not None:
        print(f"PostgreSQL: {runs['postgresql']['rate']:,.0f}/s (target >= {TARGET:.0f}/s): {verdict(met)}", flush=True)
    emit_json({"benchmark": "sms_webhooks", "runs": runs, "target": TARGET, "target_met": met,
               "none_lost": all(r["lost"] == 0 and r["accepted"] == r["requests"] for r in runs.values())})
    return 0


if __name__ == "__main__":
    sys.exit(main())
