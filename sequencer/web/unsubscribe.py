"""/u/<token>: the unsubscribe link of every commercial email (COMPLIANCE rules 1 and 2, RFC 8058).

GET only shows a confirm page, because link scanners and mail previews fetch every URL
in a message. POST unsubscribes; it needs no cookie and no CSRF token, since mailbox
providers send the RFC 8058 one-click POST (`List-Unsubscribe=One-Click`) on the user's
behalf. When CSRF protection arrives for the UI, this blueprint must stay exempt.
"""
from __future__ import annotations

from flask import Blueprint, Response, make_response, render_template, request

from sequencer import optouts
from sequencer.models import Lead
from sequencer.web import get_runtime

bp = Blueprint("unsubscribe", __name__)

SOURCE = "unsubscribe_link"


@bp.get("/u/<token>")
def confirm(token: str) -> Response:
    """Show the confirm page; never change anything."""
    runtime = get_runtime()
    try:
        lead_id = optouts.read_unsubscribe_token(runtime.settings.web.secret_key, token)
    except optouts.BadToken:
        return _page("unsubscribe_invalid.html", 400)
    with runtime.session() as session:
        lead = session.get(Lead, lead_id)
        if lead is None or lead.opted_out_at is not None:
            return _page("unsubscribe_done.html", 200)
        who = mask_email(lead.email) if lead.email else mask_phone(lead.phone)
    return _page("unsubscribe_confirm.html", 200, who=who)


@bp.post("/u/<token>")
def unsubscribe(token: str) -> Response:
    """Opt the lead out of all messages; repeating it, or an erased lead, is a harmless 200."""
    runtime = get_runtime()
    try:
        lead_id = optouts.read_unsubscribe_token(runtime.settings.web.secret_key, token)
    except optouts.BadToken:
        return _page("unsubscribe_invalid.html", 400)
    # Any body is accepted; it only tells the audit trail which way the person came.
    one_click = request.form.get("List-Unsubscribe") == "One-Click"
    with runtime.session() as session:
        lead = session.get(Lead, lead_id)
        if lead is not None:
            optouts.opt_out(session, lead, now=runtime.now(), source=SOURCE,
                            detail="one-click (RFC 8058)" if one_click else "confirm page",
                            plugins=runtime.plugins, channel="email")
    return _page("unsubscribe_done.html", 200)


def _page(template: str, status: int, **context: object) -> Response:
    response = make_response(render_template(template, **context), status)
    # The URL is a per-lead capability: keep it out of caches, search engines and Referer headers.
    response.headers["Cache-Control"] = "no-store"
    response.headers["X-Robots-Tag"] = "noindex"
    response.headers["Referrer-Policy"] = "no-referrer"
    return response


def mask_email(email: str) -> str:
    """Return an address with its local part hidden but its first letter: j***@example.com."""
    local, at, domain = email.strip().rpartition("@")
    if not at:
        return "***"
    return f"{local[:1]}***@{domain}"


def mask_phone(phone: str | None) -> str:
    """Return a phone number with all but its last two digits hidden."""
    if not phone:
        return "your contact details"
    return "*" * max(len(phone) - 2, 0) + phone[-2:]
