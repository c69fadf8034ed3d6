"""Decoding: charsets, RFC 2047 headers, parts and HTML turned into the text the rules read."""
from __future__ import annotations

import email
import email.header
import email.message
import email.policy
import email.utils
import html
import re
from html.parser import HTMLParser


_ADDRESS_RE = re.compile(r"[\w.!#$%&'*+/=?^`{|}~-]+@[\w-]+(?:\.[\w-]+)+", re.UNICODE)


# How much decoded text of one part is read.  Every notice, report and reply puts what it says in
# the first few kilobytes; a cap keeps a 20 MB attachment or a runaway body from costing seconds.
_SCAN_LIMIT = 256 * 1024


_REPLY_HEAD = 32 * 1024


_CHARSET_ALIASES = {"ks_c_5601-1987": "cp949", "x-unknown": "utf-8", "unknown-8bit": "utf-8", "_autodetect_all": "utf-8"}


def _decode_bytes(data: bytes, charset: str | None) -> str:
    """Decode bytes with the declared charset, falling back to UTF-8 with replacement."""
    name = (charset or "").strip().strip('"').lower()
    name = _CHARSET_ALIASES.get(name, name)
    if name:
        try:
            return data.decode(name, errors="replace")
        except LookupError:
            pass
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return data.decode("windows-1251" if _looks_cyrillic(data) else "latin-1", errors="replace")


def _looks_cyrillic(data: bytes) -> bool:
    """Guess whether undeclared 8-bit text is windows-1251 Russian."""
    high = sum(1 for b in data if b >= 0xC0)
    return high > len(data) // 10


def _header(msg: email.message.Message, name: str) -> str:
    """Return a header decoded from RFC 2047 words, whitespace collapsed."""
    value = msg.get(name)
    if value is None:
        return ""
    try:
        chunks = email.header.decode_header(str(value))
    except Exception:
        return re.sub(r"\s+", " ", str(value)).strip()
    text = "".join(_decode_bytes(c, cs) if isinstance(c, bytes) else c for c, cs in chunks)
    return re.sub(r"\s+", " ", text).strip()


def _part_text(part: email.message.Message) -> str:
    """Return the decoded text of a non-multipart part."""
    try:
        data = part.get_payload(decode=True)
    except Exception:
        data = None
    if isinstance(data, bytes):
        return _decode_bytes(data[:_SCAN_LIMIT], part.get_content_charset())
    payload = part.get_payload()
    return payload[:_SCAN_LIMIT] if isinstance(payload, str) else ""


class _HTMLText(HTMLParser):
    """Turn HTML into text, skipping quoted history and non-content elements."""

    _BLOCK = frozenset({"p", "div", "br", "tr", "li", "h1", "h2", "h3", "h4", "table", "hr", "blockquote"})
    _SKIP = frozenset({"script", "style", "head", "title"})

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.out: list[str] = []
        self.skip_depth = 0
        self.stopped = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if self.stopped:
            return
        attr = {k: (v or "") for k, v in attrs}
        marker = f"{attr.get('class', '')} {attr.get('id', '')}".lower()
        # Everything after these markers is the quoted thread (Gmail, Outlook, Thunderbird, Apple).
        if any(m in marker for m in ("gmail_quote", "divrplyfwdmsg", "moz-cite-prefix", "appendonsend", "yahoo_quoted", "outlookmessageheader")):
            self.stopped = True
            return
        if tag == "blockquote":
            self.stopped = True
            return
        if tag in self._SKIP:
            self.skip_depth += 1
        elif tag in self._BLOCK:
            self.out.append("\n")

    def handle_endtag(self, tag: str) -> None:
        if tag in self._SKIP and self.skip_depth:
            self.skip_depth -= 1
        elif tag in self._BLOCK and not self.stopped:
            self.out.append("\n")

    def handle_data(self, data: str) -> None:
        if not self.stopped and not self.skip_depth:
            self.out.append(data)


def _html_to_text(markup: str) -> str:
    """Return the visible, unquoted text of an HTML body."""
    parser = _HTMLText()
    try:
        parser.feed(markup)
        parser.close()
    except Exception:
        return re.sub(r"<[^>]+>", " ", html.unescape(markup))
    text = "".join(parser.out).replace("\xa0", " ")
    text = re.sub(r"[ \t]+\n", "\n", text)
    return re.sub(r"\n{3,}", "\n\n", text).strip()


def _address(value: str) -> str:
    """Return the bare, lowercased address of a header value or DSN field."""
    value = re.sub(r"^\s*(rfc822|rfc-822|x400|utf-8)\s*;", "", value, flags=re.I).strip()
    _, addr = email.utils.parseaddr(value)
    if "@" not in addr:
        found = _ADDRESS_RE.search(value)
        addr = found.group(0) if found else ""
    return addr.strip("<>.;, ").lower()


def _message_ids(value: str) -> list[str]:
    """Return the <message-id>s in a header value, in order."""
    return re.findall(r"<[^<>\s]+>", value or "")


def _parse(raw: bytes) -> email.message.Message:
    """Parse bytes into a message, repairing a multipart whose declared boundary is never used."""
    msg = email.message_from_bytes(raw, policy=email.policy.compat32)
    declared = msg.get_boundary()
    if msg.get_content_maintype() != "multipart" or not declared or isinstance(msg.get_payload(), list):
        return msg
    used = re.findall(rb"^--([^\s]{8,200}?)(?:--)?\s*$", raw, re.M)
    if not used:
        return msg
    actual = max(set(used), key=used.count)
    return email.message_from_bytes(raw.replace(declared.encode(), actual, 1), policy=email.policy.compat32)
