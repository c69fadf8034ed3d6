"""The SMS channel: texts sent with Twilio's SDK, each result classified for at-most-once sending."""
from __future__ import annotations

import asyncio
import logging
import urllib.request
from base64 import b64encode
from contextvars import ContextVar
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import requests
from twilio.base.exceptions import TwilioRestException, TwilioServiceException
from twilio.http import AsyncHttpClient
from twilio.http.http_client import TwilioHttpClient
from twilio.http.response import Response
from twilio.rest import Client

from sequencer.channels import Channel, Cost, Health, OutboundTouch, SendResult
from sequencer_sms import segments
from sequencer_sms.errors import RECIPIENT_PROBLEMS, retry_after
from sequencer_sms.settings import SCHEMA, SmsConfigError, SmsSettings, max_segments, read_settings

STATUS_PATH = "/hooks/sms/status"
INBOUND_PATH = "/hooks/sms/inbound"
HTTP_TIMEOUT = 30.0
CONNECT_TIMEOUT = 10.0
HEALTH_TIMEOUT = 5.0
# A touch whose number's next free slot is this close waits for it inside the batch; a later
# slot (a backlog, the daily cap) defers the touch instead, so a batch never sleeps for long.
WAIT_AT_MOST = timedelta(seconds=2)

# Twilio's message statuses -> the contract's (docs/plugins.md, Receiving). "read" (WhatsApp)
# and "receiving"/"received" (inbound) say nothing about a text we sent.
STATUS = {"accepted": "queued", "scheduled": "queued", "queued": "queued", "sending": "sending", "sent": "sent",
          "delivered": "delivered", "undelivered": "undelivered", "failed": "failed", "canceled": "failed"}


class SmsChannel(Channel):
    """Send texts through Twilio Messaging, from the lead's number of the conversation."""

    name = "sms"
    automatic = True
    config_schema = SCHEMA
    address_kind = "phone"
    address_required = "all"
    task_kind = "sms"
    task_verb = "Text"
    task_priority = 20
    requires_consent = "all"
    contact_hours = True
    sender_kind = "number"

    def unavailable_reason(self) -> str | None:
        """Return the [plugins.sms] setting that is missing or unusable, or None when texts can go out."""
        context = getattr(self, "context", None)
        if context is None:
            return "the sms channel has not been configured yet"
        try:
            read_settings(context.settings)
        except SmsConfigError as exc:
            return str(exc)
        return None

    def health(self) -> Health:
        """Fetch our Twilio account with the configured credentials: nothing is sent, nothing is billed."""
        reason = self.unavailable_reason()
        if reason is not None:
            return Health(ok=False, detail=reason)
        settings = read_settings(self.context.settings)
        client = Client(settings.account_sid, settings.auth_token, environment={},
                        http_client=TwilioHttpClient(timeout=HEALTH_TIMEOUT))
        client.api.base_url = settings.api_base_url
        try:
            account = client.api.v2010.accounts(settings.account_sid).fetch()
        except TwilioRestException as exc:
            if exc.status in (401, 403, 404):
                return Health(ok=False, detail=f"Twilio refused the account (HTTP {exc.status}): check [plugins.sms] "
                                               "account_sid and auth_token")
            return Health(ok=False, detail=f"Twilio error {exc.code} (HTTP {exc.status}): {exc.msg}")
        except requests.RequestException as exc:
            return Health(ok=False, detail=f"cannot reach {settings.api_base_url}: {exc}")
        if account.status != "active":
            return Health(ok=False, detail=f"the Twilio account {account.friendly_name!r} is {account.status}: "
                                           "Twilio refuses its texts")
        senders = (f"messaging service {settings.messaging_service_sid}" if settings.messaging_service_sid
                   else f"{len(settings.numbers)} number{'' if len(settings.numbers) == 1 else 's'}")
        return Health(ok=True, detail=f"ok (Twilio account {account.friendly_name!r}, {senders})")

    def describe_cost(self, text: str) -> Cost:
        """Return the segments Twilio bills the text as, and their encoding."""
        counted = segments.count(text)
        return Cost(counted.count, f"{counted.count} segment{'' if counted.count == 1 else 's'} ({counted.encoding})")

    def check_rendered(self, text: str) -> None:
        """Refuse a text longer than [plugins.sms] max_segments."""
        limit = max_segments(self.context.settings)
        counted = segments.count(text)
        if counted.count > limit:
            raise ValueError(f"the rendered text takes {counted.count} segments ({counted.units} "
                             f"{'septets' if counted.encoding == 'GSM-7' else 'UTF-16 units'}, {counted.encoding}); "
                             f"[plugins.sms] max_segments is {limit}: shorten the template or raise max_segments")

    def prepare(self, touch: OutboundTouch) -> None:
        """Refuse an empty text or one longer than [plugins.sms] max_segments."""
        if not touch.text.strip():
            raise ValueError("the rendered text is empty; Twilio refuses a message with no body")
        self.check_rendered(touch.text)

    def send_batch(self, touches: list[OutboundTouch]) -> list[SendResult]:
        """Send every touch and return one result per touch, in order.

        The senders and rate slots of the whole group are taken first, in one transaction each;
        then the texts go out, each at its slot, up to [plugins.sms] concurrent_requests at once
        over one connection pool (the SDK's asyncio client: waiting for Twilio costs no thread).
        """
        try:
            settings = read_settings(self.context.settings)
        except SmsConfigError as exc:
            return [SendResult(t.touch_id, accepted=False, retryable=True, error=str(exc)) for t in touches]
        plans = self._plan(settings, touches)
        if not any(isinstance(plan, dict) for plan in plans):
            return [plan for plan in plans if isinstance(plan, SendResult)]
        return asyncio.run(self._send_all(settings, touches, plans))

    async def _send_all(self, settings: SmsSettings, touches: list[OutboundTouch],
                        plans: list[SendResult | dict[str, Any]]) -> list[SendResult]:
        http = _AsyncHttpClient(settings.api_base_url)
        # environment={}: credentials and the API host come from [plugins.sms] only, never TWILIO_* variables.
        client = Client(settings.account_sid, settings.auth_token, environment={}, http_client=http)
        client.api.base_url = settings.api_base_url
        room = asyncio.Semaphore(settings.concurrent_requests)

        async def send(touch: OutboundTouch, plan: SendResult | dict[str, Any]) -> SendResult:
            if isinstance(plan, SendResult):
                return plan
            async with room:
                return await self._send(client, settings, touch, plan)

        try:
            answers = await asyncio.gather(*(send(touch, plan) for touch, plan in zip(touches, plans)),
                                           return_exceptions=True)
        finally:
            await http.close()
        # A bug on one text's way must not lose the others' answers; that text may have gone out.
        return [answer if isinstance(answer, SendResult) else
                SendResult(touch.touch_id, accepted=False, provider_status="unknown",
                           error=f"the send failed unexpectedly, it may have gone out: {answer!r}")
                for touch, answer in zip(touches, answers)]

    def _plan(self, settings: SmsSettings, touches: list[OutboundTouch]) -> list[SendResult | dict[str, Any]]:
        """Return, per touch, the Messages.create arguments to send with, or the result it already has."""
        core = self.context.core
        assert core is not None, "a channel that sends is configured with its Core"
        callback = self.context.base_url.rstrip("/") + STATUS_PATH
        plans: list[SendResult | dict[str, Any]] = []
        for touch in touches:
            if not touch.to_phone:
                plans.append(SendResult(touch.touch_id, accepted=False,
                                        error=f"touch {touch.touch_id} has no phone number"))
            else:
                plans.append({"to": touch.to_phone, "body": touch.text, "status_callback": callback})
        if settings.messaging_service_sid:
            # The service picks the number (its Sticky Sender keeps a conversation on one) and queues for its rate.
            for plan in plans:
                if isinstance(plan, dict):
                    plan["messaging_service_sid"] = settings.messaging_service_sid
            return plans
        to_send = [(i, touch) for i, (touch, plan) in enumerate(zip(touches, plans)) if isinstance(plan, dict)]
        senders = core.sender_numbers([touch.touch_id for _, touch in to_send], settings.numbers)
        numbered = []
        for i, touch in to_send:
            number = senders.get(touch.touch_id)
            if number is None:
                plans[i] = SendResult(touch.touch_id, accepted=False, retryable=True,
                                      error="no number to send from: set [plugins.sms] numbers or "
                                            "`sequencer numbers assign +E164 --owner EMAIL`")
            else:
                numbered.append((i, touch, number))
        slots = core.number_slots([number for _, _, number in numbered], settings.per_number_per_second,
                                  settings.per_number_daily_cap, latest=core.now() + WAIT_AT_MOST)
        for (i, touch, number), slot in zip(numbered, slots):
            if not slot.reserved:
                plans[i] = SendResult(touch.touch_id, accepted=False, defer_until=slot.at,
                                      error=f"{number} is busy (per-number rate or daily cap); next free at "
                                            f"{slot.at.isoformat()}")
            else:
                plans[i] = {**plans[i], "from_": number, "slot_at": slot.at}
        return plans

    async def _send(self, client: Client, settings: SmsSettings, touch: OutboundTouch,
                    message: dict[str, Any]) -> SendResult:
        core = self.context.core
        assert core is not None
        slot_at = message.pop("slot_at", None)
        if slot_at is not None:
            wait = (slot_at - core.now()).total_seconds()
            if wait > 0:
                await asyncio.sleep(wait)
        try:
            sent = await client.messages.create_async(**message)
        except (TwilioRestException, TwilioServiceException) as exc:
            return _refused(touch, exc, _last_headers.get(), core.now())
        except (aiohttp.ClientConnectorError, aiohttp.ConnectionTimeoutError) as exc:
            # Refused, unresolvable, no TLS handshake, or no connection in time: the request never left.
            return SendResult(touch.touch_id, accepted=False, retryable=True,
                              error=f"cannot reach {settings.api_base_url}: {exc!r}")
        except (aiohttp.ClientError, asyncio.TimeoutError) as exc:
            # The request may have reached Twilio: a person must check before anything is resent.
            return SendResult(touch.touch_id, accepted=False, provider_status="unknown",
                              error=f"no answer from {settings.api_base_url} after sending: {exc!r}")
        return SendResult(touch.touch_id, accepted=True, provider_id=sent.sid,
                          provider_status=STATUS.get(sent.status or "", sent.status))


# The headers of the current task's last Twilio response: the SDK's exceptions drop a 429's Retry-After.
_last_headers: ContextVar[Any] = ContextVar("sms_last_response_headers", default=None)


class _AsyncHttpClient(AsyncHttpClient):
    """An aiohttp session for the SDK's asyncio calls: one connection pool per group of texts.

    The proxy for the API (HTTPS_PROXY, NO_PROXY...) is read from the environment once, when the
    client is made, rather than on every request.
    """

    def __init__(self, api_base_url: str) -> None:
        super().__init__(logging.getLogger("twilio.http_client"), True, HTTP_TIMEOUT)
        self.session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=HTTP_TIMEOUT,
                                                                           sock_connect=CONNECT_TIMEOUT))
        url = urlsplit(api_base_url)
        bypass = url.hostname is None or urllib.request.proxy_bypass(url.hostname)
        self.proxy = None if bypass else urllib.request.getproxies().get(url.scheme)

    async def request(self, method: str, url: str, params: dict[str, object] | None = None,
                      data: dict[str, object] | None = None, headers: dict[str, str] | None = None,
                      auth: tuple[str, str] | None = None, timeout: float | None = None,
                      allow_redirects: bool = False) -> Response:
        _last_headers.set(None)
        if auth:  # HTTP Basic (RFC 7617): the account SID and auth token
            headers = {**(headers or {}), "Authorization": "Basic " + b64encode(":".join(auth).encode()).decode()}
        # The SDK passes timeout=None when it has none; aiohttp would read None as "no timeout at all",
        # so only a given one replaces the session's (HTTP_TIMEOUT, CONNECT_TIMEOUT).
        limits = {"timeout": aiohttp.ClientTimeout(total=timeout, sock_connect=CONNECT_TIMEOUT)} if timeout else {}
        async with self.session.request(
                method.upper(), url, params=params, data=data, headers=headers, proxy=self.proxy,
                allow_redirects=allow_redirects, **limits) as answer:
            response = Response(answer.status, await answer.text(), answer.headers)
        _last_headers.set(response.headers)
        return response

    async def close(self) -> None:
        await self.session.close()


def _refused(touch: OutboundTouch, exc: TwilioRestException | TwilioServiceException, headers: Any,
             now: datetime) -> SendResult:
    """Classify Twilio's refusal: the recipient's problem, slow down, or a failure of this one message."""
    code, status = exc.code, exc.status
    words = getattr(exc, "msg", None) or getattr(exc, "title", "") or ""
    error = f"Twilio error {code} (HTTP {status}): {words}"
    if code in RECIPIENT_PROBLEMS:
        return SendResult(touch.touch_id, accepted=False, error=error, recipient_problem=RECIPIENT_PROBLEMS[code])
    if status == 429 or status >= 500:
        # Twilio answered and did not take the message; its rate or its outage says nothing about the lead.
        return SendResult(touch.touch_id, accepted=False, error=error,
                          defer_until=retry_after(headers.get("Retry-After") if headers else None, now))
    if status in (401, 403):
        return SendResult(touch.touch_id, accepted=False, retryable=True, error=error,
                          sender_problem=f"Twilio refused our account credentials: {error}; check [plugins.sms] "
                                         "account_sid and auth_token")
    return SendResult(touch.touch_id, accepted=False, provider_status=f"error {code}", error=error)
