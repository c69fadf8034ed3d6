"""/hooks/email/inbound: inbound mail over HTTP, for providers that forward mail to a URL.

The body is the raw RFC 5322 message. The caller proves itself with the shared secret
`[plugins.email] inbound_secret` (the old `[web] inbound_secret` is still read), as `Authorization: Bearer SECRET` or `X-Sequencer-Secret: SECRET`;
no cookie is involved, so CSRF protection does not apply (and must stay off here). Without
a configured secret the endpoint does not exist (404).
"""
from __future__ import annotations

import hmac

from flask import Blueprint, abort, jsonify, request
from flask.typing import ResponseReturnValue

from sequencer.channels import CoreUnavailable, core_for

bp = Blueprint("email_hooks", __name__, url_prefix="/hooks/email")

MAX_MESSAGE_BYTES = 25 * 1024 * 1024  # the largest message common mail providers accept
RETRY_AFTER_SECONDS = 60  # asked of the provider while the database is unavailable


@bp.post("/inbound")
def email_inbound() -> ResponseReturnValue:
    """Act on one inbound message; answer with how it was read and what was done."""
    from sequencer_email.inbound import receive_email

    core = core_for("email")
    secret = core.settings.get("inbound_secret")
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
    try:
        # Providers retry a delivery they think failed: the same message is acted on once.
        result = receive_email(core, raw)
    except CoreUnavailable as exc:
        # Providers retry on a 5xx; a message that cannot be acted on gets its 200, or they would retry it forever.
        return jsonify(error=str(exc)), 503, {"Retry-After": str(RETRY_AFTER_SECONDS)}
    return jsonify(result.as_json())


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
