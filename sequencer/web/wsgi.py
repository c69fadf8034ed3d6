"""The WSGI entry point for gunicorn (`gunicorn sequencer.web.wsgi:app`); it never starts a scheduler."""
from __future__ import annotations

from sequencer.web import create_app

# Workers run as separate `sequencer worker` processes next to gunicorn (DESIGN.md: Scale).
app = create_app(start_scheduler=False)
