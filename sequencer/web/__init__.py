"""The Flask app factory: nothing is built at import time, the runtime is handed in or built from settings."""
from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

from flask import Flask, current_app

from sequencer.clock import OffsetClock, SystemClock, parse_instant
from sequencer.config import load_settings
from sequencer.runtime import Runtime

if TYPE_CHECKING:
    from sequencer.clock import Clock
    from sequencer.config import Settings

EXTENSION = "sequencer"


def create_app(runtime: Runtime | None = None, *, settings: Settings | None = None, start_scheduler: bool = False,
               test_config: dict[str, Any] | None = None) -> Flask:
    """Build the web app around a runtime (or one built from settings, else SEQUENCER_CONFIG)."""
    if runtime is None:
        runtime = Runtime(settings or load_settings(), _clock_from_env())
    app = Flask(__name__)
    app.config.from_mapping(SECRET_KEY=runtime.settings.web.secret_key)
    if test_config:
        app.config.update(test_config)
    app.extensions[EXTENSION] = runtime

    # Imported here because the blueprint modules import get_runtime from this package.
    from sequencer.web import auth, health, leads, overview, security, times, today, unsubscribe, work

    for module in (health, auth, today, leads, work, overview, unsubscribe):
        app.register_blueprint(module.bp)
    runtime.plugins.hook.register_blueprints(app=app)
    # After every blueprint, plugins' included: the CSRF exemptions are read from the finished url_map.
    security.init_app(app, runtime)
    app.jinja_env.globals.update(wall=times.wall)

    if start_scheduler:
        # Imported only here: the WSGI entry point and tests never pull in APScheduler.
        from sequencer.worker import start_embedded_scheduler

        start_embedded_scheduler(app, runtime)
    return app


def get_runtime() -> Runtime:
    """Return the runtime of the current app."""
    return current_app.extensions[EXTENSION]


def _clock_from_env() -> Clock:
    # SEQUENCER_NOW starts an advancing clock for a long-running process (DESIGN.md: --now).
    text = os.environ.get("SEQUENCER_NOW")
    return OffsetClock(parse_instant(text)) if text else SystemClock()
