"""Every pluggy hookspec of Sequencer. The core always calls hooks with keyword arguments."""
from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable

import pluggy

if TYPE_CHECKING:
    import click
    import flask
    import jinja2

    from sequencer.channels import Channel, Core, Health, SenderState, SentTouch
    from sequencer.models import Enrollment, InboundEvent, Lead

hookspec = pluggy.HookspecMarker("sequencer")


@hookspec
def register_channels(register: Callable[[Channel], None]) -> None:
    """Register Channel instances by calling register(channel) once for each."""


@hookspec
def register_jobs(register: Callable[[str, Callable[[Core], None], float], None]) -> None:
    """Register periodic work by calling register(name, function, interval_seconds) once for each job.

    The worker calls function(core) every interval_seconds, one run at a time, with the
    plugin's Core; runs that fall due while one is still going are merged into one.
    """


@hookspec
def register_commands(cli: click.Group) -> None:
    """Add click commands or groups to the `sequencer` command."""


@hookspec
def register_blueprints(app: flask.Flask) -> None:
    """Register Flask blueprints (webhooks under /hooks/PLUGIN/, admin pages) on the app."""


@hookspec
def prepare_template_env(env: jinja2.Environment) -> None:
    """Add filters, tests and globals to a message template environment (called for HTML and text)."""


@hookspec
def lead_context(lead: Lead) -> dict[str, Any] | None:
    """Return extra template variables for this lead (enrichment); results are merged into the context."""


@hookspec
def check_inbound(sender: SenderState, timeout: float) -> Health | None:
    """Check that a sender's incoming messages can be read (an IMAP login) as `sequencer doctor` does.

    Return None for a sender whose reading is not this plugin's (no settings of yours on it).
    Called for every sender whose state has settings; must not take longer than `timeout` seconds.
    """


@hookspec(firstresult=True)
def classify_reply(text: str) -> str | None:
    """Return "positive", "negative" or "neutral" for a reply's new text; stops at the first non-None result."""


@hookspec
def touch_sent(touch: SentTouch) -> None:
    """Called after a touch was sent: its channel's provider accepted it.

    A touch that counts only once its plugin reports it done (SendResult.sent_when_reported, a
    voicemail drop) is sent on that report (its message played), not when the provider took it.
    """


@hookspec
def inbound_received(event: InboundEvent) -> None:
    """Called after an inbound event (reply, bounce, complaint, opt-out...) was recorded and acted on."""


@hookspec
def enrollment_exited(enrollment: Enrollment, reason: str) -> None:
    """Called after an enrollment left its cadence (replied, bounced, opted_out, finished, removed...)."""
