"""The runtime: settings, clock, database and plugins, shared by the CLI, the worker and the web app."""
from __future__ import annotations

from contextlib import contextmanager
from functools import cached_property
from typing import IO, Iterator

import sqlalchemy as sa
import sqlalchemy.orm as so

from sequencer.clock import Clock, SystemClock
from sequencer.config import Settings
from sequencer.db import make_engine, make_sessionmaker


class Runtime:
    def __init__(self, settings: Settings, clock: Clock | None = None, engine: sa.Engine | None = None) -> None:
        self.settings = settings
        self.clock: Clock = clock or SystemClock()
        self.engine = engine or make_engine(settings.database.url)
        self.sessionmaker = make_sessionmaker(self.engine)
        # The SQLite single-worker lock (sequencer.worker), held until dispose().
        self.worker_lock: IO[str] | None = None

    @contextmanager
    def session(self) -> Iterator[so.Session]:
        """Open a session that commits on success and rolls back on error."""
        with self.sessionmaker() as session, session.begin():
            yield session

    def now(self):
        return self.clock.now()

    @cached_property
    def plugins(self):
        from sequencer.plugins import Plugins

        return Plugins(self.settings, runtime=self)

    @cached_property
    def renderer(self):
        from sequencer.rendering import Renderer

        hook = self.plugins.hook.prepare_template_env
        return Renderer(self.settings.templates_dir, prepare_env=lambda env: hook(env=env))

    def dispose(self) -> None:
        if self.worker_lock is not None:
            self.worker_lock.close()
            self.worker_lock = None
        self.engine.dispose()
