"""The email channel plugin (plugins/email) against real aiosmtpd servers on loopback."""
from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

import pytest
from aiosmtpd.smtp import AuthResult, LoginPassword

from sequencer.channels import ChannelContext, OutboundTouch, Sender
from sequencer.mailsink import MailSink, SinkHandler
from sequencer.testing.smtp import CountingHandler, closed_port, smtp_server
from sequencer.plugins import Plugins
from sequencer_email import EmailChannel
from sequencer_email.refusals import sender_cause

POSTAL = "Sequencer Test Co, 1 Test Street, Testville"
UNSUBSCRIBE = "https://sequencer.test/u/" + "t0k3n" * 24  # longer than a header line: must not be folded


@dataclass
class RefuseRcptHandler(CountingHandler):
    """Refuse some recipients with a given reply, accept the others."""

    refuse: dict[str, str] = field(default_factory=dict)

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):  # noqa: ANN001
        if address in self.refuse:
            return self.refuse[address]
        envelope.rcpt_tos.append(address)
        return "250 OK"


@dataclass
class DropAfterDataHandler(CountingHandler):
    """Receive the whole message, then hang up (or stall) instead of replying."""

    stall_seconds: float = 0.0

    async def handle_DATA(self, server, session, envelope):  # noqa: ANN001
        await super().handle_DATA(server, session, envelope)
        if self.stall_seconds:
            await asyncio.sleep(self.stall_seconds)
        server.transport.abort()
        return "250 OK never heard"


@dataclass
class DropOnSecondMailHandler(CountingHandler):
    """Hang up when the second MAIL FROM of the server's life arrives."""

    mails: int = 0

    async def handle_MAIL(self, server, session, envelope, address, mail_options):  # noqa: ANN001
        self.mails += 1
        if self.mails == 2:
            server.transport.abort()
        envelope.mail_from = address
        return "250 OK"


@dataclass
class RefuseAtHandler(CountingHandler):
    """Answer one SMTP step (EHLO, MAIL, RCPT, or "message": the reply to the message data) with a given reply."""

    stage: str = "RCPT"
    reply: str = "550 5.7.1 refused"

    async def handle_EHLO(self, server, session, envelope, hostname, responses):  # noqa: ANN001
        responses = await super().handle_EHLO(server, session, envelope, hostname, responses)
        return [self.reply] if self.stage == "EHLO" else responses

    async def handle_MAIL(self, server, session, envelope, address, mail_options):  # noqa: ANN001
        if self.stage == "MAIL":
            return self.reply
        envelope.mail_from = address
        return "250 OK"

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):  # noqa: ANN001
        if self.stage == "RCPT":
            return self.reply
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):  # noqa: ANN001
        if self.stage == "message":
            return self.reply
        return await super().handle_DATA(server, session, envelope)


def make_channel(port: int, *, postal_address: str | None = POSTAL, **settings: Any) -> EmailChannel:
    channel = EmailChannel()
    channel.configure(ChannelContext(
        settings={"host": "127.0.0.1", "port": port, "security": "none", "timeout": 5, **settings},
        postal_address=postal_address,
        base_url="https://sequencer.test",
    ))
    return channel


def make_touch(number: int = 1, **changes: Any) -> OutboundTouch:
    values: dict[str, Any] = dict(
        touch_id=number,
        attempt=1,
        channel="email",
        to_email=f"lead{number}@example.org",
        to_name=f"Lead Number{number}",
        to_phone=None,
        sender=Sender(address="rep@example.com", display_name="Rita Rep"),
        subject=f"Hello {number}",
        text=f"Hi Lead {number},\nshort note.",
        html=f"<html><body><p>Hi Lead {number},</p></body></html>",
        message_id=f"<touch-{number}.abc@example.com>",
        unsubscribe_url=UNSUBSCRIBE,
    )
    values.update(changes)
    return OutboundTouch(**values)


def prepared(channel: EmailChannel, *touches: OutboundTouch) -> list[OutboundTouch]:
    for touch in touches:
        channel.prepare(touch)
    return list(touches)


# Loading and availability


def test_plugin_loads_through_its_entry_point(settings, smtp_sink: MailSink) -> None:
    plugins = Plugins(settings)
    channel = plugins.channel("email")
    assert isinstance(channel, EmailChannel)
    assert plugins.channel_plugin("email") == "email"
    assert channel.automatic is True
    assert channel.unavailable_reason() is None
    assert channel.health().ok
    [result] = channel.send_batch(prepared(channel, make_touch()))
    assert result.accepted
    assert [m["To"] for m in smtp_sink.messages()] == ["Lead Number1 <lead1@example.org>"]


def test_config_schema_documents_every_key() -> None:
    assert set(EmailChannel.config_schema) == {
        "host", "port", "security", "username", "password", "timeout", "message_id_domain", "keepalive_seconds",
        "dkim_selector", "dkim_private_key", "dkim_private_key_file", "dkim_domain"}


@pytest.mark.parametrize("postal_address", [None, "", "   "])
def test_no_postal_address_makes_the_channel_unavailable(postal_address: str | None) -> None:
    channel = make_channel(closed_port(), postal_address=postal_address)
    reason = channel.unavailable_reason()
    assert reason is not None and "[sending] postal_address" in reason
    assert not channel.health().ok
    with pytest.raises(ValueError, match="postal_address"):
        channel.prepare(make_touch())
    [result] = channel.send_batch([make_touch()])
    assert not result.accepted and result.retryable and "postal_address" in result.error


def test_no_host_makes_the_channel_unavailable() -> None:
    channel = EmailChannel()
    channel.configure(ChannelContext(settings={}, postal_address=POSTAL, base_url="https://sequencer.test"))
    assert "[plugins.email] host" in channel.unavailable_reason()


def test_unknown_security_mode_is_named() -> None:
    assert "security" in make_channel(25, security="tls").unavailable_reason()


def test_health_reports_the_server_error() -> None:
    port = closed_port()
    health = make_channel(port).health()
    assert not health.ok and f"127.0.0.1:{port}" in health.detail


# prepare: footer and header injection


def test_prepare_adds_postal_address_and_unsubscribe_link() -> None:
    touch = make_touch(html="<html><body><p>Hi</p></body></html>", unsubscribe_url="https://sequencer.test/u/a&b")
    make_channel(25).prepare(touch)
    assert touch.text.endswith(f"short note.\n\n{POSTAL}\nUnsubscribe: https://sequencer.test/u/a&b\n")
    assert '<a href="https://sequencer.test/u/a&amp;b">' in touch.html
    assert POSTAL in touch.html
    assert touch.html.index("Unsubscribe") < touch.html.index("</body>")


def test_prepare_without_unsubscribe_url_still_adds_the_postal_address() -> None:
    touch = make_touch(unsubscribe_url=None, html=None)
    make_channel(25).prepare(touch)
    assert touch.text.endswith(f"\n\n{POSTAL}\n") and "Unsubscribe" not in touch.text


@pytest.mark.parametrize("subject", ["Hello\nBcc: victim@example.net", "Hello\r", "\r\nHi"])
def test_prepare_refuses_a_subject_with_a_line_break(subject: str) -> None:
    with pytest.raises(ValueError, match="subject contains a line break"):
        make_channel(25).prepare(make_touch(subject=subject))


def test_prepare_refuses_extra_headers_that_replace_ours() -> None:
    with pytest.raises(ValueError, match="Message-ID"):
        make_channel(25).prepare(make_touch(headers={"Message-ID": "<forged@example.com>"}))


# Sending


def test_batch_of_three_goes_over_one_connection() -> None:
    handler = CountingHandler()
    with smtp_server(handler) as sink:
        channel = make_channel(sink.port)
        touches = prepared(channel, *(make_touch(n) for n in (1, 2, 3)))
        results = channel.send_batch(touches)
    assert handler.connections == 1
    assert [r.touch_id for r in results] == [1, 2, 3]
    assert all(r.accepted and not r.retryable for r in results)
    assert [r.provider_id for r in results] == [t.message_id for t in touches]
    assert all(r.provider_status.startswith("250 ") for r in results)
    for number, (received, message) in enumerate(zip(sink.received, sink.messages()), start=1):
        assert received.mail_from == "rep@example.com"
        assert received.rcpt_tos == [f"lead{number}@example.org"]
        assert message.get_content_type() == "multipart/alternative"
        assert [p.get_content_type() for p in message.iter_parts()] == ["text/plain", "text/html"]
        assert message["From"] == "Rita Rep <rep@example.com>"
        assert message["To"] == f"Lead Number{number} <lead{number}@example.org>"
        assert message["Subject"] == f"Hello {number}"
        assert message["Message-ID"] == f"<touch-{number}.abc@example.com>"
        assert message["Date"] is not None
        assert "In-Reply-To" not in message


def test_message_carries_one_click_unsubscribe_and_footer() -> None:
    with smtp_server(CountingHandler()) as sink:
        channel = make_channel(sink.port)
        channel.send_batch(prepared(channel, make_touch()))
    [received] = sink.received
    # Unfolded and unencoded, so mailbox providers can read it (RFC 8058).
    assert f"\r\nList-Unsubscribe: <{UNSUBSCRIBE}>\r\n".encode() in received.data
    message = received.message
    assert message["List-Unsubscribe"] == f"<{UNSUBSCRIBE}>"
    assert message["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    text, html = (part.get_content() for part in message.iter_parts())
    assert POSTAL in text and f"Unsubscribe: {UNSUBSCRIBE}" in text
    assert POSTAL in html and f'<a href="{UNSUBSCRIBE}">' in html


def test_threaded_touch_carries_in_reply_to_and_references() -> None:
    first, second = "<touch-1.abc@example.com>", "<touch-2.abc@example.com>"
    touch = make_touch(3, subject="Re: Hello 1", in_reply_to=second, references=f"{first} {second}",
                       headers={"X-Sequencer-Touch": "3"})
    with smtp_server(CountingHandler()) as sink:
        channel = make_channel(sink.port)
        [result] = channel.send_batch(prepared(channel, touch))
    assert result.accepted
    [message] = sink.messages()
    assert message["Subject"] == "Re: Hello 1"
    assert message["In-Reply-To"] == second
    assert message["References"] == f"{first} {second}"
    assert message["X-Sequencer-Touch"] == "3"


def test_text_only_touch_is_a_single_text_part() -> None:
    with smtp_server(CountingHandler()) as sink:
        channel = make_channel(sink.port)
        channel.send_batch(prepared(channel, make_touch(html=None)))
    [message] = sink.messages()
    assert message.get_content_type() == "text/plain"
    assert POSTAL in message.get_content()


def test_missing_message_id_is_generated_and_returned() -> None:
    with smtp_server(CountingHandler()) as sink:
        channel = make_channel(sink.port, message_id_domain="mail.example.com")
        [result] = channel.send_batch(prepared(channel, make_touch(message_id=None)))
    [message] = sink.messages()
    assert result.accepted
    assert result.provider_id == message["Message-ID"]
    assert result.provider_id.startswith("<") and result.provider_id.endswith("@mail.example.com>")


def test_mailbox_transport_overrides_the_shared_server() -> None:
    with smtp_server(CountingHandler()) as shared, smtp_server(CountingHandler()) as own:
        channel = make_channel(shared.port)
        own_sender = Sender(address="boss@example.com", display_name="Big Boss",
                            transport={"host": "127.0.0.1", "port": own.port})
        touches = prepared(channel, make_touch(1), make_touch(2, sender=own_sender), make_touch(3))
        results = channel.send_batch(touches)
    assert [r.touch_id for r in results] == [1, 2, 3] and all(r.accepted for r in results)
    assert [m.rcpt_tos for m in shared.received] == [["lead1@example.org"], ["lead3@example.org"]]
    assert [(m.mail_from, m.rcpt_tos) for m in own.received] == [("boss@example.com", ["lead2@example.org"])]
    assert shared.handler.connections == 1 and own.handler.connections == 1


def test_login_uses_the_configured_credentials() -> None:
    def authenticate(server, session, envelope, mechanism, auth_data: LoginPassword) -> AuthResult:  # noqa: ANN001
        # handled=False: aiosmtpd then replies 535 itself instead of leaving the client waiting.
        return AuthResult(success=(auth_data.login, auth_data.password) == (b"rep", b"s3cret"), handled=False)

    with smtp_server(CountingHandler(), authenticator=authenticate, auth_require_tls=False) as sink:
        good = make_channel(sink.port, username="rep", password="s3cret")
        bad = make_channel(sink.port, username="rep", password="wrong")
        assert good.health().ok and not bad.health().ok
        [accepted] = good.send_batch(prepared(good, make_touch(1)))
        [refused] = bad.send_batch(prepared(bad, make_touch(2)))
    assert accepted.accepted
    assert not refused.accepted and refused.retryable and "535" in refused.error
    assert refused.sender_problem == "535 5.7.8 Authentication credentials invalid"
    assert [m.rcpt_tos for m in sink.received] == [["lead1@example.org"]]


def test_starttls_is_required_when_configured() -> None:
    with smtp_server(CountingHandler()) as sink:
        channel = make_channel(sink.port, security="starttls")
        [result] = channel.send_batch(prepared(channel, make_touch()))
    # The server offers no STARTTLS: nothing may go out in plain text.
    assert not result.accepted and result.retryable and "STARTTLS" in result.error
    assert sink.received == []


# Failures and their classification


def test_temporary_refusal_of_recipient_is_retryable() -> None:
    handler = RefuseRcptHandler(refuse={"lead1@example.org": "451 4.3.0 try again later"})
    with smtp_server(handler) as sink:
        channel = make_channel(sink.port)
        [result] = channel.send_batch(prepared(channel, make_touch(1)))
    assert not result.accepted and result.retryable and result.recipient_problem is None
    assert "451 4.3.0 try again later" in result.error and "RCPT" in result.error


def test_unknown_user_is_an_invalid_address_and_the_batch_goes_on() -> None:
    handler = RefuseRcptHandler(refuse={"lead1@example.org": "550 5.1.1 user unknown"})
    with smtp_server(handler) as sink:
        channel = make_channel(sink.port)
        invalid, delivered = channel.send_batch(prepared(channel, make_touch(1), make_touch(2)))
    assert not invalid.accepted and not invalid.retryable
    assert invalid.recipient_problem == "invalid_address"
    assert invalid.provider_status == "550 5.1.1 user unknown"
    assert delivered.accepted
    assert handler.connections == 1
    assert [m.rcpt_tos for m in sink.received] == [["lead2@example.org"]]


@pytest.mark.parametrize("reply", ["550 No such user here", "550 5.1.10 Recipient address rejected: null MX"])
def test_invalid_address_is_read_from_code_or_text(reply: str) -> None:
    with smtp_server(RefuseRcptHandler(refuse={"lead1@example.org": reply})) as sink:
        channel = make_channel(sink.port)
        [result] = channel.send_batch(prepared(channel, make_touch(1)))
    assert result.recipient_problem == "invalid_address" and not result.retryable


def test_recipient_policy_refusal_fails_without_blaming_the_recipient_or_the_sender() -> None:
    # Postfix check_recipient_access: the recipient's own restriction, not our mailbox's fault.
    reply = "554 5.7.1 <lead1@example.org>: Recipient address rejected: Access denied"
    with smtp_server(RefuseRcptHandler(refuse={"lead1@example.org": reply})) as sink:
        channel = make_channel(sink.port)
        [result] = channel.send_batch(prepared(channel, make_touch(1)))
    assert not result.accepted and not result.retryable
    assert result.recipient_problem is None and result.sender_problem is None
    assert "Recipient address rejected: Access denied" in result.error


@pytest.mark.parametrize("stall_seconds", [0.0, 3.0], ids=["disconnect", "timeout"])
def test_lost_reply_after_data_is_unknown_and_never_retried(stall_seconds: float) -> None:
    handler = DropAfterDataHandler(stall_seconds=stall_seconds)
    with smtp_server(handler) as sink:
        channel = make_channel(sink.port, timeout=1)
        [result] = channel.send_batch(prepared(channel, make_touch(1)))
    assert len(sink.received) == 1  # the server did get the whole message
    assert not result.accepted and not result.retryable
    assert result.provider_status == "unknown"
    assert "must not be resent" in result.error


def test_connection_refused_makes_every_touch_retryable() -> None:
    channel = make_channel(closed_port())
    results = channel.send_batch(prepared(channel, *(make_touch(n) for n in (1, 2, 3))))
    assert [r.touch_id for r in results] == [1, 2, 3]
    assert all(not r.accepted and r.retryable and "127.0.0.1" in r.error for r in results)


def test_connection_broken_mid_batch_reconnects_once_for_the_rest() -> None:
    handler = DropOnSecondMailHandler()
    with smtp_server(handler) as sink:
        channel = make_channel(sink.port)
        first, second, third = channel.send_batch(prepared(channel, *(make_touch(n) for n in (1, 2, 3))))
    assert first.accepted
    assert not second.accepted and second.retryable and second.provider_status is None
    assert third.accepted
    assert handler.connections == 2
    assert [m.rcpt_tos for m in sink.received] == [["lead1@example.org"], ["lead3@example.org"]]


def test_touch_without_recipient_fails_alone() -> None:
    with smtp_server(CountingHandler()) as sink:
        channel = make_channel(sink.port)
        missing, delivered = channel.send_batch(prepared(channel, make_touch(1, to_email=None), make_touch(2)))
    assert not missing.accepted and not missing.retryable and "no recipient" in missing.error
    assert delivered.accepted


# Refusals during the session that are our side's fault: the mailbox is held, the lead not blamed


SENDER_SIDE = [
    ("RCPT", "550 5.7.1 Service unavailable; Client host [127.0.0.1] blocked using zen.spamhaus.org", "blocklist"),
    ("RCPT", "550 5.7.1 relaying denied", "relay"),
    ("RCPT", "450 4.7.1 <lead1@example.org>: Client host rejected: rate limited, try again in an hour", "rate_limit"),
    ("MAIL", "530 5.7.0 Authentication required", "authentication"),
    ("MAIL", "553 5.1.8 <rep@example.com>: Sender address rejected: Domain not found", "sender_rejected"),
    ("MAIL", "421 4.7.0 Try again later, too many connections", "rate_limit"),
    ("message", "550 5.7.26 Unauthenticated email from example.com is not accepted due to domain's DMARC policy",
     "authentication"),
    ("message", "554 5.7.1 Message rejected for policy reasons", "policy"),
    ("message", "550 5.7.350 Remote server returned message detected as spam", "spam"),
]


@pytest.mark.parametrize("stage, reply, cause", SENDER_SIDE, ids=[cause + "-" + stage for stage, _r, cause in SENDER_SIDE])
def test_refusal_for_our_side_is_a_sender_problem(stage: str, reply: str, cause: str) -> None:
    handler = RefuseAtHandler(stage=stage, reply=reply)
    with smtp_server(handler) as sink:
        channel = make_channel(sink.port)
        results = channel.send_batch(prepared(channel, make_touch(1), make_touch(2)))
    assert sink.received == []
    for result in results:
        assert not result.accepted and result.recipient_problem is None
        # Nothing was accepted: once the mailbox is released the touch may go again.
        assert result.retryable
        assert result.sender_problem == reply
    assert reply in results[0].error and stage in results[0].error
    assert sender_cause(stage, int(reply[:3]), reply[4:]) == cause


def test_421_rate_limit_is_not_asked_again_in_the_batch() -> None:
    handler = RefuseAtHandler(stage="MAIL", reply="421 4.7.0 Try again later, too many connections")
    with smtp_server(handler) as sink:
        channel = make_channel(sink.port)
        results = channel.send_batch(prepared(channel, *(make_touch(n) for n in (1, 2, 3))))
    # The server hung up on us because of our rate: no reconnect, every touch waits with the same reason.
    assert handler.connections == 1
    assert [r.sender_problem for r in results] == ["421 4.7.0 Try again later, too many connections"] * 3
    assert all(r.retryable and not r.accepted for r in results)
    assert sink.received == []


def test_blocklisted_client_refused_at_ehlo_holds_every_touch_of_the_session() -> None:
    reply = "554 5.7.1 Service unavailable; Client host [127.0.0.1] blocked using b.barracudacentral.org"
    handler = RefuseAtHandler(stage="EHLO", reply=reply)
    with smtp_server(handler) as sink:
        channel = make_channel(sink.port)
        results = channel.send_batch(prepared(channel, make_touch(1), make_touch(2)))
    assert handler.connections == 1  # refused once, not asked again
    assert [r.sender_problem for r in results] == [reply, reply]
    assert all(r.retryable and "EHLO" in r.error and "blocklist" in r.error for r in results)
    assert sink.received == []


# aiosmtpd warns that AUTH without TLS is unsafe; this loopback server has no certificate to offer.
@pytest.mark.filterwarnings("ignore:Requiring AUTH while not requiring TLS:UserWarning")
def test_server_login_required_is_a_sender_problem() -> None:
    # aiosmtpd with auth_required answers MAIL with its own 530 5.7.0, as real submission servers do.
    with smtp_server(CountingHandler(), auth_required=True, auth_require_tls=False) as sink:
        channel = make_channel(sink.port)
        [result] = channel.send_batch(prepared(channel, make_touch(1)))
    assert result.sender_problem is not None and result.sender_problem.startswith("530 5.7.0")
    assert result.retryable and sink.received == []


NOT_SENDER_SIDE = [
    # The recipient's side or a passing fault of theirs: handled as before.
    ("RCPT", "550 5.1.1 <lead1@example.org>: Recipient address rejected: User unknown in local recipient table",
     False, "invalid_address"),
    ("RCPT", "450 4.7.1 <lead1@example.org>: Recipient address rejected: Greylisted, see http://postgrey.example/",
     True, None),
    ("RCPT", "550 5.7.1 RESOLVER.RST.NotAuthorized; not authorized to send to this recipient group", False, None),
    ("RCPT", "452 4.2.2 The email account that you tried to reach is over quota", True, None),
    ("MAIL", "421 4.3.2 Service shutting down, closing transmission channel", True, None),
    ("message", "451 4.7.0 Temporary System Problem. Try again later", True, None),
    ("RCPT", "550 5.7.17 Mailbox owner has changed", False, None),
    # A bare temporary 4.7.x to one recipient: greylisting that does not say so.
    ("RCPT", "451 4.7.1 Please try again later", True, None),
]


@pytest.mark.parametrize("stage, reply, retryable, recipient_problem", NOT_SENDER_SIDE,
                         ids=[f"{stage}-{reply[:9]}" for stage, reply, *_ in NOT_SENDER_SIDE])
def test_refusal_about_the_recipient_or_a_passing_fault_is_not_a_sender_problem(
        stage: str, reply: str, retryable: bool, recipient_problem: str | None) -> None:
    with smtp_server(RefuseAtHandler(stage=stage, reply=reply)) as sink:
        channel = make_channel(sink.port)
        [result] = channel.send_batch(prepared(channel, make_touch(1)))
    assert not result.accepted and result.sender_problem is None
    assert result.retryable is retryable and result.recipient_problem == recipient_problem


@pytest.mark.parametrize("stage, code, reply, cause", [
    ("greeting", 554, "No SMTP service here", "sender_rejected"),  # RFC 5321 3.1
    ("greeting", 421, "4.3.2 Service not available", None),
    ("AUTH", 535, "Authentication failed", "authentication"),
    ("AUTH", 454, "4.7.0 Temporary authentication failure", None),  # RFC 4954: the server's backend
    ("EHLO", 550, "5.7.1 Helo command rejected: Host not found", "sender_rejected"),
    ("RCPT", 550, "5.7.1 Client host rejected: cannot find your reverse hostname, [192.0.2.1]", "reverse_dns"),
    ("RCPT", 554, "5.7.1 Your IP 192.0.2.1 is listed on bl.spamcop.net", "blocklist"),
    ("RCPT", 550, "5.1.1 <x@example.org>: user is not listed in the Domino Directory", None),
    ("RCPT", 550, "5.7.1 You have been blocked by the recipient", None),
    ("RCPT", 550, "5.7.2 Mailing list expansion prohibited", None),
    ("message", 550, "5.7.25 The IP address sending this message does not have a PTR record setup", "reverse_dns"),
    ("message", 550, "5.7.23 SPF validation failed", "authentication"),
    ("message", 554, "5.7.9 Message not accepted for policy reasons", "policy"),
    ("message", 550, "Our system has detected that this message is likely unsolicited mail", "spam"),
    ("RCPT", 550, "Requested action not taken: mailbox unavailable", None),
    ("RCPT", 250, "OK", None),
])
def test_sender_cause_rules(stage: str, code: int, reply: str, cause: str | None) -> None:
    assert sender_cause(stage, code, reply) == cause
