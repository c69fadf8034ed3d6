"""/healthz: is the web process up and can it reach its database."""
from __future__ import annotations

import sqlalchemy as sa
from flask import Blueprint, jsonify
from flask.typing import ResponseReturnValue

from sequencer.web import get_runtime

bp = Blueprint("health", __name__)


@bp.get("/healthz")
def healthz() -> ResponseReturnValue:
    """Answer ok after a SELECT 1, or 503 with the database error."""
    try:
        with get_runtime().engine.connect() as conn:
            conn.execute(sa.text("SELECT 1"))
    except sa.exc.SQLAlchemyError as exc:
        # The driver's own message (first line) says what is wrong without the SQL around it.
        cause = getattr(exc, "orig", None) or exc
        message = (str(cause).strip().splitlines() or [type(cause).__name__])[0]
        return jsonify(status="error", database=f"{type(cause).__name__}: {message}"), 503
    return jsonify(status="ok", database="ok")
