"""Placing calls with Twilio's SDK: one client per batch, the account's rate across workers, refusals classified."""
from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import requests
from twilio.base.exceptions import TwilioRestException
from twilio.rest import Client
from urllib3.exceptions import NewConnectionError

from sequencer.channels import Core, Health
from sequencer_voice.settings import VoiceSettings

HTTP_TIMEOUT = 30.0
# A call whose account slot is this close waits for it; a later one (a backlog) is deferred.
WAIT_AT_MOST = timedelta(seconds=2)
# Twilio's call statuses -> the contract's (docs/plugins.md, Receiving).
STATUS = {"queued": "queued", "initiated": "initiated", "ringing": "ringing", "in-progress": "in_progress",
          "completed": "completed", "busy": "busy", "no-answer": "no_answer", "failed": "failed",
          "canceled": "canceled"}
FINAL = ("completed", "busy", "no_answer", "failed", "canceled")
# Twilio's error for a number that cannot be called ("Invalid 'To' Phone Number"): the lead's problem.
INVALID_NUMBER = (21211, 13223, 13224)


def client(settings: VoiceSettings) -> Client:
    """Return a Twilio client for [plugins.voice]: its credentials and API host, never TWILIO_* variables."""
    from twilio.http.http_client import TwilioHttpClient

    made = Client(settings.account_sid, settings.auth_token, environment={},
                  http_client=TwilioHttpClient(timeout=HTTP_TIMEOUT))
    made.api.base_url = settings.api_base_url
    return made


def account_health(settings: VoiceSettings) -> Health:
    """Fetch our Twilio account with [plugins.voice]'s credentials: nothing is called or billed."""
    try:
        account = client(settings).api.v2010.accounts(settings.account_sid).fetch()
    except TwilioRestException as exc:
        if exc.status in (401, 403, 404):
            return Health(ok=False, detail=f"Twilio refused the account (HTTP {exc.status}): check [plugins.voice] "
                                           "account_sid and auth_token")
        return Health(ok=False, detail=f"Twilio error {exc.code} (HTTP {exc.status}): {exc.msg}")
    except requests.RequestException as exc:
        return Health(ok=False, detail=f"cannot reach {settings.api_base_url}: {exc}")
    if account.status != "active":
        return Health(ok=False, detail=f"the Twilio account {account.friendly_name!r} is {account.status}: "
                                       "Twilio refuses its calls")
    return Health(ok=True, detail=f"ok (Twilio account {account.friendly_name!r})")


@dataclass(frozen=True)
class Placed:
    """What came of asking Twilio for a call: its SID, or why not and whether trying again is safe."""

    sid: str | None = None
    error: str | None = None
    # The request surely never reached Twilio (or Twilio refused it): a new attempt is safe.
    retryable: bool = False
    # Twilio may have placed the call: a person must check before anything is redialled.
    unknown: bool = False
    invalid_number: bool = False
    our_side: bool = False
    # The account's rate or Twilio's load: try again at this instant, no attempt used.
    defer_until: Any = None


def place(core: Core, settings: VoiceSettings, twilio: Client, **call: Any) -> Placed:
    """Take the account's next call slot (waiting up to WAIT_AT_MOST), then create the call."""
    now = core.now()
    slot = core.account_slot(f"twilio-calls:{settings.account_sid}", settings.calls_per_second,
                                latest=now + WAIT_AT_MOST)
    if not slot.reserved:
        return Placed(error=f"the account's {settings.calls_per_second:g} calls per second are taken until "
                            f"{slot.at.isoformat()}", defer_until=slot.at)
    if slot.at > now:
        time.sleep((slot.at - now).total_seconds())
    try:
        return Placed(sid=twilio.calls.create(**call).sid)
    except TwilioRestException as exc:
        error = f"Twilio error {exc.code} (HTTP {exc.status}): {exc.msg}"
        if exc.code in INVALID_NUMBER:
            return Placed(error=error, invalid_number=True)
        if exc.status == 429 or exc.status >= 500:
            return Placed(error=error, defer_until=core.now() + timedelta(seconds=60))
        if exc.status in (401, 403):
            return Placed(error=f"{error}; check [plugins.voice] account_sid and auth_token", retryable=True,
                          our_side=True)
        return Placed(error=error)
    except requests.exceptions.RequestException as exc:
        if _never_connected(exc):
            return Placed(error=f"cannot reach {settings.api_base_url}: {exc}", retryable=True)
        return Placed(error=f"no answer from {settings.api_base_url} after asking for the call: {exc}", unknown=True)


def _never_connected(exc: requests.exceptions.RequestException) -> bool:
    """Tell whether the request surely never reached the server (refused, unresolvable, connect timeout)."""
    if isinstance(exc, requests.exceptions.ConnectTimeout):
        return True
    reason = getattr(exc.args[0], "reason", None) if exc.args else None
    return isinstance(exc, requests.exceptions.ConnectionError) and isinstance(reason, NewConnectionError)
