"""Sequencer's SMS channel plugin: texts over Twilio Messaging, inbound texts and status callbacks."""
from __future__ import annotations

from typing import Callable

import flask

from sequencer import hookimpl
from sequencer.channels import Channel
from sequencer_sms.channel import SmsChannel
from sequencer_sms.webhooks import bp

__all__ = ["SmsChannel", "register_blueprints", "register_channels"]


@hookimpl
def register_channels(register: Callable[[Channel], None]) -> None:
    """Register the sms channel (it replaces the built-in manual-only one)."""
    register(SmsChannel())


@hookimpl
def register_blueprints(app: flask.Flask) -> None:
    """Add /hooks/sms/inbound and /hooks/sms/status."""
    app.register_blueprint(bp)
