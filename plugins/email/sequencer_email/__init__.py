"""Sequencer's email channel plugin: sends email touches over SMTP."""
from __future__ import annotations

from typing import Callable

from sequencer import hookimpl
from sequencer.channels import Channel
from sequencer_email.channel import EmailChannel

__all__ = ["EmailChannel", "register_channels"]


@hookimpl
def register_channels(register: Callable[[Channel], None]) -> None:
    """Register the email channel."""
    register(EmailChannel())
