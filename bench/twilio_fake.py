"""The tests' fake Twilio (sequencer.testing.twilio) in its own process, for the SMS benchmarks.

It answers the REST calls the real SDK makes, as in the tests. Protocol: it prints
`PORT <n> <AccountSid> <AuthToken>` once it listens, then reads commands on stdin, one a line,
and answers each with one JSON line:
  stats  -> {"messages": N, "distinct_to": N}: accepted Messages.json requests and their distinct To numbers
  reset  -> the same, then it forgets them
EOF on stdin stops it.
"""
from __future__ import annotations

import json
import sys

from sequencer.testing.twilio import FakeTwilio


def main() -> int:
    with FakeTwilio() as fake:
        host_port = fake.url.rsplit(":", 1)[1]
        print(f"PORT {host_port} {fake.account_sid} {fake.auth_token}", flush=True)
        for line in sys.stdin:
            sent = fake.sent()
            print(json.dumps({"messages": len(sent), "distinct_to": len({r.form.get("To") for r in sent})}),
                  flush=True)
            if line.strip() == "reset":
                with fake._lock:
                    fake.requests.clear()
    return 0


if __name__ == "__main__":
    sys.exit(main())
