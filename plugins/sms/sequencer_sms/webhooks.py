"""Twilio's webhooks: inbound texts and status callbacks, each checked against X-Twilio-Signature."""
from __future__ import annotations

import logging

import flask
from twilio.request_validator import RequestValidator
from twilio.twiml.messaging_response import MessagingResponse

from sequencer.channels import Core, core_for, public_url
from sequencer_sms.channel import INBOUND_PATH, STATUS, STATUS_PATH
from sequencer_sms.errors import RECIPIENT_PROBLEMS
from sequencer_sms.settings import SmsConfigError, SmsSettings, read_settings

log = logging.getLogger(__name__)
bp = flask.Blueprint("sms_hooks", __name__)

# Sent only when Twilio's Advanced Opt-Out did not answer the keyword itself (no OptOutType in the webhook).
OPT_OUT_CONFIRMATION = "You are unsubscribed and will get no more messages from us. Reply START to resubscribe."
OPT_IN_CONFIRMATION = "You are subscribed to our messages again. Reply STOP to unsubscribe, HELP for help."


@bp.post(INBOUND_PATH)
def inbound() -> flask.Response:
    """Hand an inbound text to the core and answer with TwiML: help, a confirmation, or nothing."""
    core, settings = _authenticated()
    form = flask.request.form
    to = form.get("To", "").strip()
    if not core.is_our_number(to, settings.numbers):
        # Signed by our account, but to a number we were not told about: answering would act on a
        # number nobody configured. Twilio shows the 403 in its debugger; Twilio's own STOP handling
        # still blocks that sender, and our next text to them comes back 21610 and suppresses them.
        log.warning("sms: inbound text to %s, which is not one of our numbers; add it to [plugins.sms] numbers "
                    "or `sequencer numbers assign %s --owner EMAIL`", to, to)
        return _text(f"{to} is not one of our numbers", 403)
    receipt = core.inbound_message(channel="sms", from_address=form.get("From", ""), to_address=to,
                                   text=form.get("Body", ""), provider_id=form.get("MessageSid") or None,
                                   at=core.now(), raw=form.to_dict())
    answer = MessagingResponse()
    # Twilio's Advanced Opt-Out answers STOP, START and HELP itself and then says so in OptOutType.
    if not form.get("OptOutType"):
        words = {"help": settings.help_text, "opted_out": OPT_OUT_CONFIRMATION,
                 "opted_in": OPT_IN_CONFIRMATION}.get(receipt.action)
        if words:
            answer.message(words)
    return flask.Response(str(answer), status=200, mimetype="application/xml")


@bp.post(STATUS_PATH)
def status() -> flask.Response:
    """Move the touch forward by Twilio's status; a recipient error code also suppresses the number."""
    core, _ = _authenticated()
    form = flask.request.form
    sid, word, code = form.get("MessageSid", ""), form.get("MessageStatus", ""), form.get("ErrorCode") or None
    if sid and word in STATUS:
        core.delivery_status(channel="sms", provider_id=sid, status=STATUS[word], at=core.now(), error_code=code,
                             raw=form.to_dict())
    problem = RECIPIENT_PROBLEMS.get(int(code)) if code and code.isdigit() else None
    recipient = form.get("To", "")
    detail = f"Twilio error {code} on message {sid}"
    if problem == "opted_out":
        core.opt_out(channel="sms", address=recipient, source="twilio_21610", detail=detail)
    elif problem == "invalid_address":
        core.address_verdict(channel="sms", address=recipient, verdict="invalid", detail=detail)
    elif problem == "unable_sms":
        core.address_verdict(channel="sms", address=recipient, verdict="unable_sms", detail=detail)
    # Unknown ids and replays get 200 too: Twilio retrying them would not help.
    return _text("", 200)


def _authenticated() -> tuple[Core, SmsSettings]:
    """Return the core and settings; answer 403 unless X-Twilio-Signature matches [web] base_url + path."""
    core = core_for("sms")
    try:
        settings = read_settings(core.settings)
    except SmsConfigError as exc:
        # Without the auth token no signature can be checked, so nothing may be recorded.
        flask.abort(_text(f"the sms plugin is not configured: {exc}", 503))
    request = flask.request
    url = public_url(core.base_url, request.path, request.query_string)
    signature = request.headers.get("X-Twilio-Signature", "")
    if not signature or not RequestValidator(settings.auth_token).validate(url, request.form, signature):
        log.warning("sms: %s with a missing or wrong X-Twilio-Signature (checked against %s); nothing recorded",
                    request.path, url)
        flask.abort(_text("invalid X-Twilio-Signature", 403))
    return core, settings


def _text(body: str, status: int) -> flask.Response:
    return flask.Response(body, status=status, mimetype="text/plain")
