"""Sequencer's own default hook implementations, registered trylast so any plugin can override them."""
from __future__ import annotations

from sequencer import hookimpl
from sequencer.mailreading import read_reply_sentiment


@hookimpl(trylast=True)
def classify_reply(text: str) -> str | None:
    """Label a reply positive, negative or neutral with the built-in keyword rules."""
    return read_reply_sentiment(text)
