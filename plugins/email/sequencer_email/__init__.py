"""Sequencer's email channel plugin: sends email touches over SMTP and reads the mail that comes back.

Mail comes in three ways, all acted on through the plugin's Core: an MTA pipe
(`sequencer inbound email`), a webhook (`POST /hooks/email/inbound`) and IMAP polling (the
`poll_inbound` job, `sequencer mailboxes inbound` to set a mailbox up).
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Callable

from sequencer import hookimpl
from sequencer.channels import Channel, Core, Health, SenderState
from sequencer_email.channel import EmailChannel

if TYPE_CHECKING:
    import click
    import flask

__all__ = ["EmailChannel", "check_inbound", "register_blueprints", "register_channels", "register_commands",
           "register_jobs"]

# How often each mailbox with IMAP settings is polled (one that keeps failing backs off up to an hour).
POLL_SECONDS = 60.0


@hookimpl
def register_channels(register: Callable[[Channel], None]) -> None:
    """Register the email channel."""
    register(EmailChannel())


@hookimpl
def register_jobs(register: Callable[[str, Callable[[Core], None], float], None]) -> None:
    """Poll every mailbox with IMAP settings once a minute (safe on several workers: a lock per mailbox)."""
    from sequencer_email.imap import poll_inbound

    register("poll_inbound", poll_inbound, POLL_SECONDS)


@hookimpl
def register_commands(cli: click.Group) -> None:
    """Add `sequencer inbound email|classify|list|poll` and `sequencer mailboxes inbound`."""
    from sequencer_email import commands

    commands.register(cli)


@hookimpl
def register_blueprints(app: flask.Flask) -> None:
    """Add POST /hooks/email/inbound."""
    from sequencer_email.webhook import bp

    app.register_blueprint(bp)


@hookimpl
def check_inbound(sender: SenderState, timeout: float) -> Health | None:
    """Log in to a mailbox's IMAP server and open its folder read-only, as the poller would."""
    from sequencer_email.imap import PollFailed, check_login

    if not sender.settings.get("host"):
        return None
    try:
        return Health(ok=True, detail=check_login(dict(sender.settings), timeout=timeout))
    except PollFailed as exc:
        return Health(ok=False, detail=str(exc))
