"""/hooks/email/inbound: inbound mail over HTTP, for providers that forward mail to a URL.

The body is the raw RFC 5322 message. The caller proves itself with the shared secret
`[web] inbound_secret`, as `Authorization: Bearer SECRET` or `X-Sequencer-Secret: SECRET`;
no cookie is involved, so CSRF protection does not apply (and must stay off here). Without
a configured secret the endpoint does not exist (404).
"""
from __future__ import annotations

import hmac

from flask import Blueprint, abort, jsonify, request
from flask.typing import ResponseReturnValue

from sequencer.web import get_runtime

bp = Blueprint("hooks", __name__, url_prefix="/hooks")

MAX_MESSAGE_BYTES = 25 * 1024 * 1024  # the largest message common mail providers accept


@bp.post("/email/inbound")
def email_inbound() -> ResponseReturnValue:
    """Act on one inbound message; answer with how it was read and what was done."""
    from sequencer.inbound import message_id_of, recorded_event
    from sequencer.inbound import handle_email

    runtime = get_runtime()
    secret = runtime.settings.web.inbound_secret
    if not secret:
        abort(404)
    if not _secret_matches(secret, _given_secret()):
        return jsonify(error="a valid shared secret is required (Authorization: Bearer, or X-Sequencer-Secret)"), 403
    if request.content_length is not None and request.content_length > MAX_MESSAGE_BYTES:
        return _too_large()
    raw = request.stream.read(MAX_MESSAGE_BYTES + 1)
    if len(raw) > MAX_MESSAGE_BYTES:
        return _too_large()
    if not raw.strip():
        return jsonify(error="the body is empty; send the raw RFC 5322 message as the request body"), 400
    with runtime.session() as session:
        # Providers retry a delivery they think failed: the same message is acted on once.
        existing = recorded_event(session, message_id_of(raw))
        if existing is not None:
            return jsonify(kind=existing.kind, lead_id=existing.lead_id, actions=[], duplicate=True)
        result = handle_email(session, raw, now=runtime.now(), plugins=runtime.plugins)
    return jsonify(kind=result.kind, lead_id=result.lead_id, actions=result.actions)


def _given_secret() -> str:
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() == "bearer" and token.strip():
        return token.strip()
    return request.headers.get("X-Sequencer-Secret", "").strip()


def _secret_matches(expected: str, given: str) -> bool:
    # Constant time, so the secret cannot be guessed from response times.
    return bool(given) and hmac.compare_digest(expected.encode("utf-8"), given.encode("utf-8"))


def _too_large() -> ResponseReturnValue:
    return jsonify(error=f"the message is larger than {MAX_MESSAGE_BYTES // (1024 * 1024)} MB"), 413
