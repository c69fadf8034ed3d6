"""A fake Twilio REST API on loopback, for the real SDK to talk to (`api_base_url` pointed at it).

It answers `POST /2010-04-01/Accounts/{AccountSid}/{Resource}.json` as Twilio does: HTTP basic
auth with the account SID and auth token, a form-encoded body, 201 with the created resource
as JSON, and Twilio's error JSON (code, message, more_info, status) on a refusal. Failures are
set per destination number. It records every request and can post signed webhooks (status
callbacks, inbound texts) to our app, signed as Twilio signs them.

Resources live in RESOURCES, one function each. For Calls.json it also plays Twilio's part in
the call (`answer`, `progress`, `play`, `recording`): it fetches the TwiML of the URL the call was
created with, follows <Redirect> and a <Dial><Number url>, and posts status and recording callbacks,
each signed as Twilio signs. Our app is reached through a Flask test client.

Loaded as a pytest plugin (`pytest_plugins = ["sequencer.testing", "sequencer.testing.twilio"]`),
it gives the `fake_twilio` fixture: a FakeTwilio listening for the test's duration.
"""
from __future__ import annotations

import base64
import json
import re
import secrets
import threading
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from email.utils import format_datetime
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable
from urllib.parse import parse_qs, urlsplit

import pytest
from twilio.request_validator import RequestValidator

API = "2010-04-01"
_PATH = re.compile(rf"^/{API}/Accounts/(?P<account>AC[0-9a-f]{{32}})/(?P<resource>\w+)\.json$")

# Twilio's words for the errors the tests ask for (https://www.twilio.com/docs/api/errors).
ERRORS: dict[int, tuple[int, str]] = {
    21610: (400, "Attempt to send to unsubscribed recipient"),
    21211: (400, "Invalid 'To' Phone Number"),
    21614: (400, "'To' number is not a valid mobile number"),
    21617: (400, "The concatenated message body exceeds the 1600 character limit"),
    20003: (401, "Authenticate"),
    20429: (429, "Too Many Requests"),
    20500: (500, "Internal Server Error"),
}


# A Failure code that answers nothing: the request is taken, then the connection closes, as when
# Twilio's answer is lost on the way back.
HANG_UP = 0


@dataclass
class Failure:
    code: int  # a key of ERRORS, or HANG_UP
    retry_after: str | None = None  # a Retry-After header to send with it


@dataclass
class Recorded:
    resource: str
    form: dict[str, str]  # the request's parameters (To, From, Body, StatusCallback...), the last of each
    values: dict[str, list[str]] = field(default_factory=dict)  # every value of each (StatusCallbackEvent repeats)
    sid: str | None = None  # the created resource's SID; None when the request was refused


@dataclass
class FakeTwilio:
    account_sid: str = field(default_factory=lambda: "AC" + secrets.token_hex(16))
    auth_token: str = field(default_factory=lambda: secrets.token_hex(16))
    requests: list[Recorded] = field(default_factory=list)
    # destination number -> the error every request to it gets
    failures: dict[str, Failure] = field(default_factory=dict)
    # call SID -> the TwiML documents our app answered for that call, in the order they were fetched
    twiml: dict[str, list[ET.Element]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None

    # -- the server ----------------------------------------------------------------------------

    def __enter__(self) -> FakeTwilio:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's name
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length).decode()
                status, payload, headers = fake._answer(self.path, self.headers.get("Authorization", ""), body)
                if status == HANG_UP:
                    return  # no answer at all: the connection closes (HTTP/1.0)
                self._json(status, payload, headers)

            def do_GET(self) -> None:  # noqa: N802 - http.server's name
                # The account itself (`client.api.v2010.accounts(sid).fetch()`): what a health check asks.
                self._json(*fake._account(self.path, self.headers.get("Authorization", "")))

            def _json(self, status: int, payload: dict[str, Any], headers: dict[str, str] | None = None) -> None:
                data = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                for name, value in (headers or {}).items():
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - http.server's signature
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        # A short poll so that shutdown() at the end of each test returns at once.
        threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
        return self

    def __exit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.shutdown()
        self._server.server_close()

    @property
    def url(self) -> str:
        assert self._server is not None
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def fail(self, to: str, code: int, retry_after: str | None = None) -> None:
        """Answer every request to `to` with Twilio's error `code` (a key of ERRORS), or with nothing (HANG_UP)."""
        self.failures[to] = Failure(code, retry_after)

    def sent(self, resource: str = "Messages") -> list[Recorded]:
        """Return the accepted requests to a resource, in order."""
        with self._lock:
            return [r for r in self.requests if r.resource == resource and r.sid]

    def _authorized(self, authorization: str) -> bool:
        """Tell whether a request's Authorization header is HTTP Basic with our SID and current token."""
        return authorization == "Basic " + base64.b64encode(f"{self.account_sid}:{self.auth_token}".encode()).decode()

    def _account(self, path: str, authorization: str) -> tuple[int, dict[str, Any]]:
        if not self._authorized(authorization) or urlsplit(path).path != f"/{API}/Accounts/{self.account_sid}.json":
            status, payload, _ = _error(20003)
            return status, payload
        return 200, {"sid": self.account_sid, "friendly_name": "Fake Twilio account", "status": "active",
                     "type": "Full", "auth_token": self.auth_token}

    def _answer(self, path: str, authorization: str, body: str) -> tuple[int, dict[str, Any], dict[str, str]]:
        match = _PATH.match(urlsplit(path).path)
        if not self._authorized(authorization) or match is None or match["account"] != self.account_sid:
            return _error(20003)
        handler = RESOURCES.get(match["resource"])
        if handler is None:
            return 404, {"code": 20404, "message": "The requested resource was not found", "status": 404,
                         "more_info": "https://www.twilio.com/docs/errors/20404"}, {}
        values = parse_qs(body, keep_blank_values=True)
        form = {k: v[-1] for k, v in values.items()}
        recorded = Recorded(match["resource"], form, values)
        with self._lock:
            self.requests.append(recorded)
        failure = self.failures.get(form.get("To", ""))
        if failure is not None:
            if failure.code == HANG_UP:
                return HANG_UP, {}, {}
            status, payload, headers = _error(failure.code)
            if failure.retry_after is not None:
                headers["Retry-After"] = failure.retry_after
            return status, payload, headers
        resource = handler(self, form)
        recorded.sid = resource["sid"]
        return 201, resource, {}

    # -- webhooks to our app ---------------------------------------------------------------------

    def signature(self, url: str, params: dict[str, str]) -> str:
        """Sign a webhook as Twilio does: HMAC-SHA1 of the URL and the sorted parameters, with the auth token."""
        return RequestValidator(self.auth_token).compute_signature(url, params)

    def post(self, client: Any, url: str, params: dict[str, str], signature: str | None = None) -> Any:
        """POST a webhook to our app through a Flask test client, signed for `url` unless told otherwise."""
        headers = {"X-Twilio-Signature": self.signature(url, params) if signature is None else signature}
        parts = urlsplit(url)
        return client.post(parts.path + (f"?{parts.query}" if parts.query else ""), data=params, headers=headers)

    def status_callback(self, client: Any, sid: str, status: str, error_code: int | None = None) -> Any:
        """Post the status callback of a message we accepted, to the StatusCallback URL it was sent with."""
        [form] = [r.form for r in self.sent() if r.sid == sid]
        params = {"AccountSid": self.account_sid, "ApiVersion": API, "MessageSid": sid, "SmsSid": sid,
                  "MessageStatus": status, "SmsStatus": status, "From": form.get("From", ""), "To": form["To"]}
        if error_code is not None:
            params["ErrorCode"] = str(error_code)
        return self.post(client, form["StatusCallback"], params)

    def inbound(self, client: Any, base_url: str, *, from_: str, to: str, body: str, sid: str | None = None,
                extra: dict[str, str] | None = None) -> Any:
        """Post an inbound text to our app's /hooks/sms/inbound, as Twilio does for a number's webhook."""
        sid = sid or "SM" + secrets.token_hex(16)
        params = {"AccountSid": self.account_sid, "ApiVersion": API, "MessageSid": sid, "SmsMessageSid": sid,
                  "SmsSid": sid, "From": from_, "To": to, "Body": body, "NumMedia": "0", "NumSegments": "1",
                  **(extra or {})}
        return self.post(client, base_url.rstrip("/") + "/hooks/sms/inbound", params)


    # -- Twilio's part in a call -------------------------------------------------------------------

    def _call_params(self, sid: str, status: str) -> dict[str, str]:
        [form] = [r.form for r in self.sent("Calls") if r.sid == sid]
        return {"AccountSid": self.account_sid, "ApiVersion": API, "CallSid": sid, "CallStatus": status,
                "Direction": "outbound-api", "From": form["From"], "To": form["To"], "Called": form["To"],
                "Caller": form["From"]}

    def answer(self, client: Any, sid: str, answered_by: str | None = None) -> list[ET.Element]:
        """The callee picked up: fetch the call's TwiML as Twilio does, following <Redirect> and <Number url>.

        With MachineDetection on the call, Twilio waits for its verdict and sends it as AnsweredBy
        (synchronous AMD); `answered_by` is that verdict (human, machine_end_beep, fax, unknown...).
        Returns the documents fetched, in order; a non-200 answer ends the call there.
        """
        [form] = [r.form for r in self.sent("Calls") if r.sid == sid]
        params = self._call_params(sid, "in-progress")
        if form.get("MachineDetection"):
            params["AnsweredBy"] = answered_by or "unknown"
        documents = self.twiml.setdefault(sid, [])
        url: str | None = form["Url"]
        while url:
            response = self.post(client, url, params)
            if response.status_code != 200:
                break
            document = ET.fromstring(response.get_data())
            documents.append(document)
            for number in document.iter("Number"):
                # The called party hears this TwiML before being connected (the record notice).
                if number.get("url"):
                    whisper = self.post(client, number.get("url"), {**params, "To": number.text or ""})
                    documents.append(ET.fromstring(whisper.get_data()))
            redirect = document.find("Redirect")
            url = redirect.text if redirect is not None else None
        return documents

    def progress(self, client: Any, sid: str, *statuses: str, duration: int | None = None,
                 answered_by: str | None = None) -> list[Any]:
        """Post the call's status callbacks in this order (Twilio's words: ringing, in-progress, no-answer...).

        Only the events the call was created to report are posted ("completed" always is), as
        Twilio does; the final one carries CallDuration, and AnsweredBy when AMD ran.
        """
        [record] = [r for r in self.sent("Calls") if r.sid == sid]
        wanted = set(record.values.get("StatusCallbackEvent", [])) | {"completed"}
        answers = []
        for sequence, status in enumerate(statuses):
            event = {"in-progress": "answered"}.get(status, status if status in ("initiated", "ringing") else "completed")
            if event not in wanted:
                continue
            params = {**self._call_params(sid, status), "SequenceNumber": str(sequence),
                      "CallbackSource": "call-progress-events", "Timestamp": format_datetime(
                          datetime.now(timezone.utc), usegmt=True)}
            if event == "completed":
                params["CallDuration"] = str(duration or 0)
            if answered_by and record.form.get("MachineDetection"):
                params["AnsweredBy"] = answered_by
            answers.append(self.post(client, record.form["StatusCallback"], params))
        return answers

    def play(self, client: Any, sid: str, answered_by: str | None = None, *, final: str = "completed",
             duration: int = 25) -> list[ET.Element]:
        """Play a whole answered call: initiated, ringing, answered and its TwiML, then the final status."""
        self.progress(client, sid, "initiated", "ringing", "in-progress")
        documents = self.answer(client, sid, answered_by)
        self.progress(client, sid, final, duration=duration, answered_by=answered_by)
        return documents

    def recording(self, client: Any, url: str, call_sid: str, duration: int = 20,
                  recording_sid: str | None = None) -> Any:
        """Post a finished recording's status callback (<Dial recordingStatusCallback>) to `url`."""
        recording_sid = recording_sid or "RE" + secrets.token_hex(16)
        params = {"AccountSid": self.account_sid, "CallSid": call_sid, "RecordingSid": recording_sid,
                  "RecordingUrl": f"{self.url}/{API}/Accounts/{self.account_sid}/Recordings/{recording_sid}",
                  "RecordingStatus": "completed", "RecordingDuration": str(duration), "RecordingChannels": "2",
                  "RecordingSource": "DialVerb"}
        return self.post(client, url, params)


def _error(code: int) -> tuple[int, dict[str, Any], dict[str, str]]:
    status, message = ERRORS[code]
    return status, {"code": code, "message": message, "more_info": f"https://www.twilio.com/docs/errors/{code}",
                    "status": status}, {}


def _message(fake: FakeTwilio, form: dict[str, str]) -> dict[str, Any]:
    """Create a Message resource, as the 2010-04-01 API answers it."""
    sid = "SM" + secrets.token_hex(16)
    now = format_datetime(datetime.now(timezone.utc), usegmt=True)
    service = form.get("MessagingServiceSid")
    return {"sid": sid, "account_sid": fake.account_sid, "api_version": API, "body": form.get("Body", ""),
            "date_created": now, "date_updated": now, "date_sent": None, "direction": "outbound-api",
            "error_code": None, "error_message": None, "from": form.get("From"), "messaging_service_sid": service,
            "num_media": "0", "num_segments": "1", "price": None, "price_unit": "USD",
            # A Messaging Service first accepts the message, then picks a sender and queues it.
            "status": "accepted" if service else "queued", "to": form.get("To"),
            "subresource_uris": {"media": f"/{API}/Accounts/{fake.account_sid}/Messages/{sid}/Media.json"},
            "uri": f"/{API}/Accounts/{fake.account_sid}/Messages/{sid}.json"}


def _call(fake: FakeTwilio, form: dict[str, str]) -> dict[str, Any]:
    """Create a Call resource, as the 2010-04-01 API answers it: queued until Twilio dials."""
    sid = "CA" + secrets.token_hex(16)
    now = format_datetime(datetime.now(timezone.utc), usegmt=True)
    return {"sid": sid, "account_sid": fake.account_sid, "api_version": API, "answered_by": None,
            "caller_name": None, "date_created": now, "date_updated": now, "direction": "outbound-api",
            "duration": None, "end_time": None, "forwarded_from": None, "from": form.get("From"),
            "from_formatted": form.get("From"), "parent_call_sid": None, "phone_number_sid": None, "price": None,
            "price_unit": "USD", "start_time": None, "status": "queued", "to": form.get("To"),
            "to_formatted": form.get("To"), "uri": f"/{API}/Accounts/{fake.account_sid}/Calls/{sid}.json",
            "subresource_uris": {"recordings": f"/{API}/Accounts/{fake.account_sid}/Calls/{sid}/Recordings.json"}}


RESOURCES: dict[str, Callable[[FakeTwilio, dict[str, str]], dict[str, Any]]] = {"Messages": _message, "Calls": _call}


@pytest.fixture
def fake_twilio():
    """A fake Twilio on loopback for the test; point [plugins.NAME] api_base_url at its `url`."""
    with FakeTwilio() as fake:
        yield fake
