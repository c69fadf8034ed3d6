"""A counting SMTP sink for the benchmarks, meant to run in its own process.

It accepts every message (aiosmtpd), keeps nothing but a count, the bytes received and the set
of Message-IDs, and never writes to disk. Protocol: it prints `PORT <n>` once it listens, then
reads commands on stdin, one a line, and answers each with one JSON line:
  stats  -> {"messages": N, "distinct_message_ids": N, "missing_message_id": N, "bytes": N}
  reset  -> the same, then the counters go back to zero
EOF on stdin stops it.

    python bench/sink.py            # listens on a free 127.0.0.1 port
"""
from __future__ import annotations

import argparse
import json
import re
import socket
import sys
import threading
from typing import Any

from aiosmtpd.controller import Controller

MESSAGE_ID = re.compile(rb"(?im)^message-id:\s*(<[^>\s]+>)")


class CountingHandler:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.messages = 0
        self.bytes = 0
        self.missing = 0
        self.ids: set[bytes] = set()

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:  # noqa: N802 - aiosmtpd API
        data = envelope.original_content or envelope.content
        end = data.find(b"\r\n\r\n")
        match = MESSAGE_ID.search(data, 0, end if end != -1 else len(data))
        with self.lock:
            self.messages += 1
            self.bytes += len(data)
            if match:
                self.ids.add(match.group(1))
            else:
                self.missing += 1
        return "250 OK"

    def stats(self, reset: bool = False) -> dict[str, int]:
        with self.lock:
            out = {"messages": self.messages, "distinct_message_ids": len(self.ids),
                   "missing_message_id": self.missing, "bytes": self.bytes}
            if reset:
                self.messages = self.bytes = self.missing = 0
                self.ids = set()
        return out


def free_port(host: str) -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args()
    handler = CountingHandler()
    port = args.port or free_port(args.host)
    controller = Controller(handler, hostname=args.host, port=port, decode_data=False)
    controller.start()
    print(f"PORT {port}", flush=True)
    try:
        for line in sys.stdin:
            command = line.strip()
            if command in ("stats", "reset"):
                print(json.dumps(handler.stats(reset=command == "reset")), flush=True)
            elif command:
                print(json.dumps({"error": f"unknown command {command!r}"}), flush=True)
    finally:
        controller.stop()


if __name__ == "__main__":
    main()
