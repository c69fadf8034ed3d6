"""From a step and a lead to a rendered message: the A/B variant, the template context, the thread subject."""
from __future__ import annotations

import hashlib
from typing import TYPE_CHECKING, Any

import sqlalchemy.orm as so

from sequencer.models import Enrollment, Lead, Mailbox, Step, User
from sequencer.optouts import unsubscribe_url
from sequencer.rendering import RenderedMessage, Renderer, build_context

if TYPE_CHECKING:
    from sequencer.plugins import Plugins
    from sequencer.runtime import Runtime

NO_POSTAL_ADDRESS = ("no postal address configured: set [sending] postal_address in config.toml "
                     "(CAN-SPAM requires one in every commercial email)")

LEAD_FIELDS = ("email", "phone", "external_id", "first_name", "last_name", "company", "domain", "title",
               "country", "timezone")


def choose_variant(step: Step, enrollment_id: int) -> dict[str, Any] | None:
    """Pick the step's A/B variant by weight, the same one every time for this enrollment."""
    if not step.variants:
        return None
    total = sum(int(v.get("weight", 1)) for v in step.variants)
    # A hash, not random(): a retried or re-rendered touch must keep its variant.
    point = int(hashlib.sha256(f"{enrollment_id}:{step.key}".encode()).hexdigest()[:12], 16) % total
    for variant in step.variants:
        point -= int(variant.get("weight", 1))
        if point < 0:
            return variant
    return step.variants[-1]


def step_content(step: Step, variant: dict[str, Any] | None) -> tuple[str | None, str | None, str | None]:
    """Return (subject, template, body): the variant's where it sets them, else the step's."""
    if variant is None:
        return step.subject, step.template, step.body
    subject = variant.get("subject") or step.subject
    if variant.get("template") or variant.get("body"):
        return subject, variant.get("template"), variant.get("body")
    return subject, step.template, step.body


def lead_fields(lead: Lead) -> dict[str, Any]:
    fields = {name: getattr(lead, name) for name in LEAD_FIELDS}
    fields["full_name"] = lead.full_name
    # build_context flattens custom fields beside the standard ones (a standard field wins).
    fields["custom_fields"] = dict(lead.custom or {})
    return fields


def user_fields(user: User | None) -> dict[str, Any] | None:
    if user is None:
        return None
    first, _, last = (user.name or "").partition(" ")
    return {"name": user.name, "first_name": first, "last_name": last, "email": user.email, "phone": user.phone}


def mailbox_fields(mailbox: Mailbox | None) -> dict[str, Any] | None:
    if mailbox is None:
        return None
    return {"address": mailbox.address, "email": mailbox.address, "display_name": mailbox.display_name,
            "name": mailbox.display_name, "signature": mailbox.signature}


def template_context(lead: Lead, owner: User | None, mailbox: Mailbox | None, *, plugins: Plugins,
                     base_url: str, secret_key: str) -> dict[str, Any]:
    """Build what a template sees: lead, owner, sender, unsubscribe_url and plugin enrichment."""
    extra: dict[str, Any] = {"unsubscribe_url": unsubscribe_url(base_url, secret_key, lead.id)}
    for contribution in plugins.hook.lead_context(lead=lead):
        extra.update(contribution or {})
    return build_context(lead=lead_fields(lead), owner=user_fields(owner), sender=mailbox_fields(mailbox), extra=extra)


def render_step(renderer: Renderer, step: Step, variant: dict[str, Any] | None, context: dict[str, Any], *,
                as_email: bool, thread_subject: str | None = None) -> RenderedMessage:
    """Render a step for one lead; raises TemplateProblem when it cannot.

    `as_email`: the channel writes to an email address, so the step renders as an email (an HTML
    part where the template has one). `thread_subject`: the step continues a thread with this
    subject, so its own subject is not rendered (the channel derives the reply's from the thread).
    """
    subject, template, body = step_content(step, variant)
    if thread_subject:
        subject = None
    if as_email:
        return renderer.render_email(subject=subject, template=template, body=body, context=context)
    text = renderer.render_text(template=template, body=body, context=context) if (template or body) else ""
    return RenderedMessage(subject=subject, text=text, html=None)


def add_text_footer(text: str, postal_address: str | None, unsubscribe_url: str | None) -> str:
    """Return a plain-text email body ending with the postal address and, when there is one, the unsubscribe link.

    Every commercial email carries both, whoever sends it (CAN-SPAM); raises ValueError when no
    postal address is configured.
    """
    address = (postal_address or "").strip()
    if not address:
        raise ValueError(NO_POSTAL_ADDRESS)
    lines = [address] + ([f"Unsubscribe: {unsubscribe_url}"] if unsubscribe_url else [])
    return text.rstrip("\r\n") + "\n\n" + "\n".join(lines) + "\n"


def context_for_enrollment(session: so.Session, enrollment: Enrollment, runtime: Runtime) -> dict[str, Any]:
    """Load what one enrollment's templates see (used by the preflight; the engine batches its loads)."""
    lead = session.get(Lead, enrollment.lead_id)
    owner = session.get(User, lead.owner_id) if lead and lead.owner_id else None
    mailbox = session.get(Mailbox, enrollment.mailbox_id) if enrollment.mailbox_id else None
    settings = runtime.settings
    return template_context(lead, owner, mailbox, plugins=runtime.plugins, base_url=settings.web.base_url,
                            secret_key=settings.web.secret_key)
