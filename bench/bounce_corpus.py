"""Measure mail reading on the shared bounce corpus, split into a half to develop on and a half to hold out.

    .venv/bin/python bench/bounce_corpus.py [--corpus DIR] [--json]

The corpus (../shared/data/bounces, see its README) is split by a hash of each file name, so
the halves never change as code changes: "dev" is the half rules may be studied and tuned on,
"holdout" the half that says how the reading holds on mail nobody here looked at. For each
half it prints the messages, how often the suppress decision and the kind agree with
expected.json, how many machine notices (a bounce, complaint, auto-reply or delivery report in
expected.json) were read as a human reply, which must be 0, how many of its `not_bounce`
messages (sisimai's "is-not-bounce" set: ordinary mail) were read as a reply, and a per-cause
confusion matrix.
`plugins/email/tests/test_mailreading.py` imports `corpus_half` and `measure` from here, so the test
thresholds and these figures come from one definition.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import sys
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # the sequencer package when not installed
    sys.path.insert(0, str(REPO))

from sequencer_email.reading import MailReading, read_message  # noqa: E402

CORPUS = REPO.parent / "shared" / "data" / "bounces"
HALVES = ("dev", "holdout")


def corpus_half(name: str) -> str:
    """Return "dev" or "holdout" for a corpus file name (a fixed hash, so the split never moves)."""
    return HALVES[hashlib.sha256(name.encode()).digest()[0] % 2]


def expected_kind(kind: str) -> str:
    """Map our kind onto expected.json's: a notification or an unreadable message is its `not_bounce`.

    A reply stays "reply", which expected.json never says: the corpus holds machine mail only.
    """
    return "not_bounce" if kind in ("notification", "unknown") else kind


def categories(reading: MailReading) -> list[str]:
    """Return the per-recipient categories of a reading in expected.json's vocabulary, sorted."""
    out = []
    for address in reading.addresses:
        if address.cause == "other":
            out.append("other:" + address.reason.split(":")[0])
        elif address.cause == "complaint":
            out.append("complaint:" + address.reason)
        else:
            out.append(address.cause)
    return sorted(out)


def primary_cause(found: list[str]) -> str:
    """Return the one cause a message stands for in the matrix: its most common recipient category."""
    if not found:
        return "(none)"
    collapsed = Counter(c.split(":")[0] for c in found)
    return max(sorted(collapsed), key=collapsed.__getitem__)


@dataclass
class Figures:
    """The agreement of one half of the corpus with expected.json."""

    half: str
    messages: int = 0
    suppress_agree: int = 0
    kind_agree: int = 0
    read_as_reply: int = 0  # machine notices read as a person's reply
    not_bounce_as_reply: int = 0  # expected.json's not_bounce read as a reply (a kind disagreement)
    matrix: Counter = field(default_factory=Counter)  # (expected cause, our cause) -> messages
    misread: list[str] = field(default_factory=list)  # files whose kind or suppress decision differs

    @property
    def suppress_pct(self) -> float:
        return 100.0 * self.suppress_agree / self.messages if self.messages else 0.0

    @property
    def kind_pct(self) -> float:
        return 100.0 * self.kind_agree / self.messages if self.messages else 0.0

    def as_dict(self) -> dict:
        return {
            "half": self.half, "messages": self.messages, "suppress_pct": round(self.suppress_pct, 1),
            "kind_pct": round(self.kind_pct, 1), "read_as_reply": self.read_as_reply,
            "not_bounce_as_reply": self.not_bounce_as_reply,
            "matrix": {f"{e} -> {o}": n for (e, o), n in sorted(self.matrix.items())},
        }


def load_expected(corpus: Path = CORPUS) -> dict[str, dict]:
    """Return expected.json of a corpus directory."""
    return json.loads((corpus / "expected.json").read_text())


def measure(half: str, corpus: Path = CORPUS) -> Figures:
    """Read every message of one half and compare it with expected.json."""
    figures = Figures(half)
    for name, expected in sorted(load_expected(corpus).items()):
        if corpus_half(name) != half:
            continue
        reading = read_message((corpus / name).read_bytes())
        figures.messages += 1
        suppress_ok = reading.suppress == expected["suppress"]
        kind_ok = expected_kind(reading.kind) == expected["kind"]
        figures.suppress_agree += suppress_ok
        figures.kind_agree += kind_ok
        if reading.kind == "reply":
            if expected["kind"] == "not_bounce":
                figures.not_bounce_as_reply += 1
            else:
                figures.read_as_reply += 1
        figures.matrix[primary_cause(expected["categories"]), primary_cause(categories(reading))] += 1
        if not (suppress_ok and kind_ok):
            figures.misread.append(name)
    return figures


def print_figures(figures: Figures) -> None:
    """Print one half's figures and its confusion matrix (rows: expected, columns: ours)."""
    print(f"== {figures.half}: {figures.messages} messages")
    print(f"suppress decision agrees: {figures.suppress_agree}/{figures.messages} ({figures.suppress_pct:.1f} %)")
    print(f"kind agrees:              {figures.kind_agree}/{figures.messages} ({figures.kind_pct:.1f} %)")
    print(f"notifications read as a reply: {figures.read_as_reply}")
    print(f"not_bounce read as a reply:    {figures.not_bounce_as_reply}")
    causes = sorted({c for pair in figures.matrix for c in pair})
    width = max(len(c) for c in causes) + 2
    print("expected \\ ours".ljust(width) + "".join(c[:12].rjust(13) for c in causes))
    for row in causes:
        print(row.ljust(width) + "".join(str(figures.matrix.get((row, col), "") or ".").rjust(13) for col in causes))
    print()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--corpus", type=Path, default=CORPUS, help="directory with the .eml files and expected.json")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    args = parser.parse_args(argv)
    if not (args.corpus / "expected.json").is_file():
        parser.error(f"{args.corpus}: no expected.json; pass --corpus with the bounce corpus directory")
    results = [measure(half, args.corpus) for half in HALVES]
    if args.json:
        print(json.dumps([r.as_dict() for r in results], indent=2))
    else:
        for figures in results:
            print_figures(figures)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
