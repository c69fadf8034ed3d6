"""The audit log: who changed what, and when."""
from __future__ import annotations

import getpass
import os
from datetime import datetime
from typing import Any

import sqlalchemy.orm as so

from sequencer.models import AuditEntry


def cli_actor() -> str:
    """Name the operator of a CLI command (SEQUENCER_ACTOR, else the OS user)."""
    return os.environ.get("SEQUENCER_ACTOR") or f"cli:{getpass.getuser()}"


def record(session: so.Session, *, actor: str, action: str, object_type: str, object_id: Any = None,
           at: datetime, **detail: Any) -> None:
    """Add one audit entry to the session (committed with the change it describes)."""
    session.add(AuditEntry(at=at, actor=actor, action=action, object_type=object_type,
                           object_id=None if object_id is None else str(object_id), detail=detail))
