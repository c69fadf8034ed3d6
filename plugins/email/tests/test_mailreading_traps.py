"""Human replies that look like machine mail, and machine notices that look like replies.

The subject of a reply is mostly our own words with "Re:" in front, so a cadence about
vacation rentals or undeliverable parcels gets replies whose subjects hold the very words
autoresponders and mail systems use. Each reply below must stay a person's reply (with
opt_out when it asks to be removed); each notice must never be read as a reply, or it would
end a cadence as *replied* and give a rep a fake task.
"""
from __future__ import annotations

import datetime
from email.message import EmailMessage

import pytest

from sequencer_email.reading import read_message

TODAY = datetime.date(2026, 1, 7)
OURS = "Rita Seller <rita@acme.example>"
SENT = "Mon, 5 Jan 2026 10:00:00 +0000"


def _quote(client: str, quoted: str) -> str:
    """Return our message quoted the way a mail client does under a reply."""
    lines = "\n".join(f"> {line}" if line else ">" for line in quoted.splitlines())
    if client == "gmail":
        return f"On Mon, Jan 5, 2026 at 10:00 AM Rita Seller <rita@acme.example> wrote:\n\n{lines}\n"
    if client == "gmail-ru":
        return f"пн, 5 янв. 2026 г. в 10:00, Rita Seller <rita@acme.example>:\n\n{lines}\n"
    if client == "thunderbird":
        return f"On 05.01.2026 10:00, Rita Seller wrote:\n{lines}\n"
    if client == "outlook":
        return ("________________________________\nFrom: Rita Seller <rita@acme.example>\n"
                f"Sent: Monday, January 5, 2026 10:00 AM\nTo: Lead\nSubject: our note\n\n{quoted}\n")
    if client == "outlook-ru":
        return ("-----Исходное сообщение-----\nОт: Rita Seller <rita@acme.example>\n"
                f"Отправлено: 5 января 2026 г. 10:00\nКому: Лид\nТема: наше письмо\n\n{quoted}\n")
    raise ValueError(client)


def human_reply(subject: str, new_text: str, *, client: str = "gmail", quoted: str = "", html: bool = False) -> bytes:
    """Build a person's reply to one of our touches, with the headers their client writes."""
    msg = EmailMessage()
    msg["From"] = "Lee Lead <lee@lead.example>"
    msg["To"] = OURS
    msg["Subject"] = subject
    msg["Date"] = "Wed, 7 Jan 2026 09:12:00 +0300"
    msg["Message-ID"] = "<reply-1@lead.example>"
    msg["In-Reply-To"] = "<touch-1@acme.example>"
    msg["References"] = "<touch-1@acme.example>"
    if client.startswith("outlook"):
        # Outlook puts these on mail a person writes; asking others not to auto-respond is not
        # being an auto-response.
        msg["Thread-Index"] = "AdqBcDeFgHiJkLmNoPqRsTuV"
        msg["X-Auto-Response-Suppress"] = "All"
        msg["X-Mailer"] = "Microsoft Outlook 16.0"
    elif client == "thunderbird":
        msg["User-Agent"] = "Mozilla Thunderbird"
    text = f"{new_text}\n\n{_quote(client, quoted or 'Hi Lee, a short note from Acme.')}"
    msg.set_content(text)
    if html:
        quoted_html = (quoted or "Hi Lee, a short note from Acme.").replace("\n", "<br>")
        msg.add_alternative(
            f"<div dir=\"ltr\">{new_text}</div><br><div class=\"gmail_quote\">On Mon, Jan 5, 2026 Rita wrote:"
            f"<blockquote class=\"gmail_quote\">{quoted_html}</blockquote></div>",
            subtype="html",
        )
    return msg.as_bytes()


AUTO_REPLY_QUOTED = (
    "Automatic reply: Quick question\n\n"
    "I am out of the office until January 12 with limited access to email.\n"
    "For urgent matters contact support@lead.example."
)
AUTO_REPLY_QUOTED_RU = "Автоматический ответ: Короткий вопрос\n\nЯ в отпуске до 12 января, отвечу после возвращения."

# (subject, new text, client, quoted, html, opt_out)
REPLIES = [
    # English: our subjects hold autoresponder and bounce words.
    ("Re: Vacation rentals for Acme", "Please unsubscribe me from these emails.", "gmail", "", False, True),
    ("Re: Vacation rentals for Acme", "Sounds interesting, can we talk on Thursday?", "gmail", "", False, False),
    ("RE: Vacation rentals for Acme", "STOP", "outlook", "", False, True),
    ("Re: Vacation rentals for Acme", "Unsubscribe", "thunderbird", "", False, True),
    ("Re: Re: Vacation rentals for Acme", "Do not email me again.", "gmail", "", False, True),
    ("Re: Out of office coverage for your support team", "We already use a vendor for this, thanks.", "outlook", "", False, False),
    ("Re: Out of Office: never miss a lead again", "Remove me from your list.", "gmail", "", False, True),
    ("RE: Out of office replies that sell", "Who else on my team did you write to?", "outlook", "", False, False),
    ("Re: Fewer undeliverable parcels in Q1", "Not interested.", "thunderbird", "", False, False),
    ("Re: Undeliverable invoices cost you money", "Yes, send me the pricing please.", "gmail", "", True, False),
    ("Re: Delivery Status Notification for your warehouse", "Sure, call me tomorrow at 10.", "outlook", "", False, False),
    ("Re: Mail delivery failed? Not with us", "Interesting. Who are your customers in retail?", "gmail", "", False, False),
    ("Re: Returned mail is costing you", "Please take me off your list.", "thunderbird", "", False, True),
    ("RE: Auto-reply templates for sales", "We're all set, thanks.", "outlook", "", False, False),
    ("Re: Automatic reply handling for help desks", "Let's set up a call next week.", "gmail", "", True, False),
    ("Re: Away days for your team", "Tell me more about the Lisbon option.", "gmail", "", False, False),
    ("Re: Quick question", "Back in the office now. Yes, let's talk on Friday.", "gmail", AUTO_REPLY_QUOTED, False, False),
    ("RE: Quick question", "Sorry, I was on leave. Not a priority for us this year.", "outlook", AUTO_REPLY_QUOTED, False, False),
    ("AW: Vacation rentals for Acme", "Please unsubscribe me.", "thunderbird", "", False, True),
    ("SV: Out of office", "Not now, maybe in Q3.", "gmail", "", False, False),
    # Russian.
    ("Re: Автоответчик для вашей поддержки", "Интересно, давайте созвонимся в четверг.", "gmail-ru", "", False, False),
    ("Ответ: Автоответ в Telegram для бизнеса", "Отпишите меня, пожалуйста.", "outlook-ru", "", False, True),
    ("RE: Отпуск без забот: аренда для Acme", "Нам не интересно, спасибо.", "outlook-ru", "", False, False),
    ("Re: Недоставленные посылки: как их вернуть", "Пришлите, пожалуйста, презентацию.", "gmail-ru", "", False, False),
    ("Re: Вне офиса: как работать удалённо", "Да, актуально. Когда удобно созвониться?", "gmail-ru", "", True, False),
    ("Re: Автоответ", "СТОП", "gmail-ru", "", False, True),
    ("Re: Короткий вопрос", "Вернулась. Давайте обсудим на следующей неделе.", "gmail-ru", AUTO_REPLY_QUOTED_RU, False, False),
    ("RE: Уведомление о доставке для вашего склада", "Больше не пишите мне.", "outlook-ru", "", False, True),
    ("Re: Out of office", "Удалите меня из рассылки.", "gmail-ru", "", False, True),
    ("Ответ: Нет на месте? Автоответ решит", "Спасибо, нет.", "outlook-ru", "", False, False),
    ("RE: Автоматический ответ клиентам", "Сколько это стоит для десяти сотрудников?", "outlook-ru", "", False, False),
    ("Re: Письмо не доставлено? Мы поможем", "Отписаться", "gmail-ru", "", False, True),
    ("Re: Ошибка доставки заказов", "Уже работаем с другим подрядчиком.", "gmail-ru", AUTO_REPLY_QUOTED_RU, False, False),
]


@pytest.mark.parametrize(("subject", "text", "client", "quoted", "html", "opt_out"), REPLIES, ids=[r[0] + " / " + r[1][:20] for r in REPLIES])
def test_human_reply_stays_a_reply(subject: str, text: str, client: str, quoted: str, html: bool, opt_out: bool) -> None:
    reading = read_message(human_reply(subject, text, client=client, quoted=quoted, html=html), today=TODAY)
    assert reading.kind == "reply"
    assert reading.opt_out is opt_out
    assert reading.reply_text.startswith(text)
    assert reading.references == ("<touch-1@acme.example>",)
    assert not reading.suppress and reading.return_date is None


def test_there_are_enough_traps() -> None:
    russian = [r for r in REPLIES if any("а" <= ch <= "я" for ch in r[1].lower())]
    assert len(REPLIES) >= 30 and len(russian) >= 10


def notice(subject: str, body: str, *, sender: str, null_path: bool = True, **headers: str) -> bytes:
    """Build a mail system's notice as a plain-text message."""
    msg = EmailMessage()
    if null_path:
        msg["Return-Path"] = "<>"
    msg["From"] = sender
    msg["To"] = OURS
    msg["Subject"] = subject
    msg["Date"] = "Wed, 7 Jan 2026 09:12:00 +0000"
    msg["Message-ID"] = "<notice-1@mx.example>"
    for name, value in headers.items():
        msg[name.replace("_", "-")] = value
    msg.set_content(body)
    return msg.as_bytes()


EXCHANGE_NO_ADDRESS = (
    "Your message did not reach some or all of the intended recipients.\n\n"
    "      Subject:  Quick question\n      Sent:     05.01.2026 10:00\n\n"
    "The following recipient(s) cannot be reached:\n\n"
    "      'Lee Lead' on 05.01.2026 10:01\n"
    "            None of your e-mail accounts could send to this recipient.\n"
)
NOTICES = {
    "postmaster system administrator, null path": notice(
        "Undeliverable: Quick question", EXCHANGE_NO_ADDRESS, sender="System Administrator <postmaster@corp.example>"),
    "postmaster system administrator, no subject words": notice(
        "Quick question", "Thank you for your message.", sender="System Administrator <postmaster@corp.example>"),
    "mailer daemon error notice": notice(
        "Delivery status notification: error",
        "This is an automatically generated Delivery Status Notification.\n\nYour message could not be delivered.",
        sender="Mailer Daemon <mailer-daemon@mx.example>", null_path=False),
    "carrier notice from post_master": notice(
        "Mail System Notice", "The mail you sent could not be delivered to its destination because of a temporary problem.",
        sender="post_master@carrier.example.ne.jp", null_path=False),
    "carrier notice from post_master, no failure words": notice(
        "Notice", "Your message was received by the mail center.", sender="post_master@carrier.example.ne.jp", null_path=False),
    "mailing-list loop alert": notice(
        "Mail loop detected",
        "A message was detected looping through the list sales@lists.example and was stopped.\n\nNo action is needed.",
        sender="sales-owner@lists.example", null_path=False),
    "mailing-list moderation": notice(
        "Your message to sales awaits moderator approval", "Your mail to 'sales' is being held until the list moderator can review it.",
        sender="sales-bounces@lists.example", null_path=False),
    "russian delivery failure, no address": notice(
        "Недоставленное сообщение", "Ваше сообщение не может быть доставлено одному или нескольким получателям.",
        sender="Mail Delivery Subsystem <mailer-daemon@mail.example.ru>"),
    "german delivery failure from a Re: subject": notice(
        "Unzustellbar: Re: Quick question", "Die Nachricht konnte nicht zugestellt werden.",
        sender="Microsoft Outlook <postmaster@firma.example.de>"),
    "null path, person-like sender": notice(
        "Re: Quick question", "Thank you for writing to us.", sender="Lee Lead <lee@lead.example>"),
}


@pytest.mark.parametrize("name", sorted(NOTICES))
def test_notice_is_never_a_reply(name: str) -> None:
    reading = read_message(NOTICES[name], today=TODAY)
    assert reading.kind in ("bounce", "notification")
    assert reading.reply_text == "" and not reading.opt_out
    if reading.kind == "notification":
        assert reading.notification_reason and not reading.addresses and not reading.suppress


def test_notice_naming_a_recipient_is_a_bounce() -> None:
    raw = notice(
        "Delivery Status Notification (Failure)",
        "Delivery to the following recipient failed permanently:\n\n     gone@lead.example\n\n"
        "Technical details of permanent failure:\nThe email account that you tried to reach does not exist.",
        sender="Mail Delivery Subsystem <mailer-daemon@googlemail.com>",
    )
    reading = read_message(raw, today=TODAY)
    assert reading.kind == "bounce" and reading.suppress
    assert [a.address for a in reading.addresses] == ["gone@lead.example"]


def test_exim_failed_recipients_header_names_the_recipient() -> None:
    raw = notice(
        "Mail delivery failed: returning message to sender",
        "This message was created automatically by mail delivery software.\n\n"
        "A message that you sent could not be delivered to one or more of its recipients.\n",
        sender="Mail Delivery System <Mailer-Daemon@mx.example>", X_Failed_Recipients="gone@lead.example",
    )
    reading = read_message(raw, today=TODAY)
    assert reading.kind == "bounce"
    assert [a.address for a in reading.addresses] == ["gone@lead.example"]


def test_loop_alert_is_a_notification_not_a_bounce_on_the_list() -> None:
    reading = read_message(NOTICES["mailing-list loop alert"], today=TODAY)
    assert reading.kind == "notification"


def test_read_receipt_is_a_notification() -> None:
    msg = EmailMessage()
    msg["From"] = "Lee Lead <lee@lead.example>"
    msg["To"] = OURS
    msg["Subject"] = "Read: Quick question"
    msg.set_content("Your message was read on 7 January 2026.")
    msg.make_mixed()
    msg.set_type("multipart/report")
    msg.set_param("report-type", "disposition-notification")
    reading = read_message(msg.as_bytes(), today=TODAY)
    assert reading.kind == "notification"
    assert "disposition-notification" in reading.notification_reason


def _auto(subject: str, body: str, **headers: str) -> bytes:
    msg = EmailMessage()
    msg["From"] = "Lee Lead <lee@lead.example>"
    msg["To"] = OURS
    msg["Subject"] = subject
    msg["In-Reply-To"] = "<touch-1@acme.example>"
    for name, value in headers.items():
        msg[name.replace("_", "-")] = value
    msg.set_content(body)
    return msg.as_bytes()


@pytest.mark.parametrize(
    "raw",
    [
        _auto("Automatic reply: Quick question", "Thanks for your message.", Auto_Submitted="auto-replied"),
        _auto("Quick question", "Thanks for your message.", X_Autoreply="yes"),
        _auto("Quick question", "Thanks for your message.", X_Autorespond="yes"),
        _auto("Quick question", "Thanks for your message.", Precedence="auto_reply"),
        _auto("Out of Office: Quick question", "I am out of the office until 12.01.2026."),
        _auto("Автоматический ответ: Короткий вопрос", "Я в отпуске до 12 января."),
        # An autoresponder that answers with our subject is known by the text it wrote.
        _auto("Re: Quick question", "I am currently out of the office until 12.01.2026."),
        # Auto-replies are sent with a null reverse path (RFC 3834 §3.3).
        _auto("Out of Office: Quick question", "Back on 12.01.2026.", Return_Path="<>"),
    ],
    ids=["auto-submitted", "x-autoreply", "x-autorespond", "precedence", "subject", "subject-ru", "body", "null-path"],
)
def test_auto_replies(raw: bytes) -> None:
    reading = read_message(raw, today=TODAY)
    assert reading.kind == "auto_reply"
    assert not reading.opt_out


def test_suppress_header_alone_is_not_an_auto_reply() -> None:
    raw = _auto("Re: Quick question", "Thanks, not now.", X_Auto_Response_Suppress="All")
    assert read_message(raw, today=TODAY).kind == "reply"


def test_auto_submitted_no_is_a_person() -> None:
    raw = _auto("Re: Quick question", "Thanks, not now.", Auto_Submitted="no")
    assert read_message(raw, today=TODAY).kind == "reply"
