"""Sequencer's voice channel plugin: click-to-call and voicemail drops over Twilio Voice."""
from __future__ import annotations

from typing import Callable

import click
import flask

from sequencer import hookimpl
from sequencer.channels import Channel
from sequencer_voice import commands
from sequencer_voice.channel import VoiceChannel
from sequencer_voice.webhooks import bp

__all__ = ["VoiceChannel", "register_blueprints", "register_channels", "register_commands"]


@hookimpl
def register_channels(register: Callable[[Channel], None]) -> None:
    """Register the voice channel (it replaces the built-in manual-only one)."""
    register(VoiceChannel())


@hookimpl
def register_blueprints(app: flask.Flask) -> None:
    """Add the /hooks/voice/... TwiML and callback endpoints."""
    app.register_blueprint(bp)


@hookimpl
def register_commands(cli: click.Group) -> None:
    """Add `sequencer calls dial TASK_ID`."""
    commands.register(cli)
