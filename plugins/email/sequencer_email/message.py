"""Build the MIME message of an email touch, and the compliance footer added before it is committed."""
from __future__ import annotations

import html
import re
from datetime import datetime
from email.headerregistry import Address, HeaderRegistry, UnstructuredHeader
from email.message import EmailMessage
from email.policy import SMTP, Policy
from email.utils import format_datetime

from sequencer.channels import OutboundTouch

# Headers the channel sets itself; a touch's extra headers may not replace them.
RESERVED_HEADERS = frozenset({
    "from", "to", "cc", "bcc", "subject", "date", "message-id", "in-reply-to", "references",
    "list-unsubscribe", "list-unsubscribe-post", "mime-version", "content-type", "content-transfer-encoding",
    "dkim-signature",
})


class UrlHeader(UnstructuredHeader):
    """An ASCII header holding a URL, written on one line."""

    def fold(self, *, policy: Policy) -> str:
        # The default folder splits a long URL into RFC 2047 encoded-words, which mail
        # providers do not decode in List-Unsubscribe: one-click unsubscribe would break.
        value = str(self)
        if not value.isascii():
            return super().fold(policy=policy)
        return f"{self.name}: {value}{policy.linesep}"


def _policy() -> Policy:
    """Return the SMTP policy: CRLF, 7-bit bodies (no 8BITMIME needed), URL headers kept whole."""
    registry = HeaderRegistry()  # a fresh one: the default registry is shared by every policy
    registry.map_to_type("list-unsubscribe", UrlHeader)
    return SMTP.clone(cte_type="7bit", header_factory=registry)


POLICY = _policy()


def check_headers(touch: OutboundTouch) -> None:
    """Raise ValueError when the subject or an extra header could inject headers or override ours."""
    if touch.subject is not None and re.search(r"[\r\n]", touch.subject):
        raise ValueError(f"touch {touch.touch_id}: the subject contains a line break (CR or LF); "
                         "fix the step's subject template so it renders on one line")
    for name, value in touch.headers.items():
        if name.lower() in RESERVED_HEADERS:
            raise ValueError(f"touch {touch.touch_id}: header {name} is set by the email channel and cannot be overridden")
        if re.search(r"[\r\n:]", name) or re.search(r"[\r\n]", value):
            raise ValueError(f"touch {touch.touch_id}: header {name!r} contains a line break or colon")


def add_footer(touch: OutboundTouch, postal_address: str) -> None:
    """Append the postal address and, when there is one, the unsubscribe link to the text and HTML bodies."""
    lines = [postal_address.strip()]
    if touch.unsubscribe_url:
        lines.append(f"Unsubscribe: {touch.unsubscribe_url}")
    touch.text = touch.text.rstrip("\r\n") + "\n\n" + "\n".join(lines) + "\n"
    if touch.html is not None:
        touch.html = _insert_before_body_end(touch.html, _html_footer(postal_address, touch.unsubscribe_url))


def _html_footer(postal_address: str, unsubscribe_url: str | None) -> str:
    """Return the footer paragraph, every value escaped."""
    address = "<br>".join(html.escape(line.strip()) for line in postal_address.strip().splitlines())
    parts = [address]
    if unsubscribe_url:
        url = html.escape(unsubscribe_url, quote=True)
        parts.append(f'Unsubscribe: <a href="{url}">{url}</a>')
    return '<p style="font-size:12px;color:#666666">' + "<br>".join(parts) + "</p>"


def _insert_before_body_end(document: str, fragment: str) -> str:
    """Insert fragment before the last </body>, or append it when the HTML has no body tag."""
    end = document.lower().rfind("</body")
    if end == -1:
        return document.rstrip() + "\n" + fragment + "\n"
    return document[:end] + fragment + "\n" + document[end:]


def build_message(touch: OutboundTouch, *, message_id: str, date: datetime) -> EmailMessage:
    """Return the touch as a MIME message: text, plus an HTML alternative when the touch has one."""
    assert touch.sender is not None and touch.to_email is not None
    message = EmailMessage(policy=POLICY)
    message["From"] = Address(touch.sender.display_name, addr_spec=touch.sender.address)
    message["To"] = Address(touch.to_name, addr_spec=touch.to_email)
    message["Subject"] = touch.subject or ""
    message["Date"] = format_datetime(date)
    message["Message-ID"] = message_id
    if touch.in_reply_to:
        message["In-Reply-To"] = touch.in_reply_to
    # A reply that only knows its parent still threads when References names that parent.
    references = touch.references or touch.in_reply_to
    if references:
        message["References"] = references
    if touch.unsubscribe_url:
        message["List-Unsubscribe"] = f"<{touch.unsubscribe_url}>"
        message["List-Unsubscribe-Post"] = "List-Unsubscribe=One-Click"  # RFC 8058
    for name, value in touch.headers.items():
        message[name] = value
    message.set_content(touch.text)
    if touch.html is not None:
        message.add_alternative(touch.html, subtype="html")
    return message
