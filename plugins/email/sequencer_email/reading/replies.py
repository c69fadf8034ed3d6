"""Human replies: the new text above the quoted history and signature, and a request to be removed."""
from __future__ import annotations

import re

from sequencer.channels import asks_to_opt_out
from sequencer_email.reading.decoding import _REPLY_HEAD, _SCAN_LIMIT


# A one-word answer that asks to stop (COMPLIANCE rule 10's keywords, English and Russian).
_OPT_OUT_WORD_RE = re.compile(
    r"\s*(stop|stopall|unsubscribe|cancel|end|quit|revoke|opt-?out|remove|стоп|отписаться|отписка|отпишите)\s*[.!]*\s*",
    re.I,
)


# Lines that start the quoted history in the common clients, English and Russian.
_QUOTE_START_RES = (
    re.compile(r"^[ \t]*On\b[^\n]{0,300}?(\n[^\n]{0,200}?)?\bwrote:[ \t]*$", re.M),  # Gmail, Apple, Thunderbird
    re.compile(r"^[ \t]*Le\b[^\n]{0,300}?(\n[^\n]{0,200}?)?a écrit ?:[ \t]*$", re.M),
    re.compile(r"^[ \t]*Am\b[^\n]{0,300}?(\n[^\n]{0,200}?)?schrieb[^\n]*:[ \t]*$", re.M),
    re.compile(r"^[^\n]{0,200}\d{4}\s*г\.[^\n]{0,40}\d{1,2}:\d{2}[^\n]{0,200}(\n[^\n]{0,200}?)?:[ \t]*$", re.M),  # Gmail in Russian
    re.compile(r"^[^\n]{0,200}(пишет|написал[аи]?)[ \t]*:[ \t]*$", re.M),
    re.compile(r"^[ \t]*-{2,}[ \t]*(Original Message|Forwarded message|Исходное сообщение|Пересланное сообщение)[ \t]*-{2,}", re.M | re.I),
    re.compile(r"^[ \t]*_{10,}[ \t]*$", re.M),  # Outlook's separator line
    re.compile(r"^[ \t]*\*?(From|От|Von|De)\*?:[^\n]*\n[ \t]*\*?(Sent|Date|Отправлено|Дата|Gesendet|Envoyé)\*?:", re.M | re.I),
    re.compile(r"^[ \t]*\*?(Sent|Отправлено)\*?:[^\n]*\n[ \t]*\*?(To|Кому)\*?:", re.M | re.I),
)


# Signatures added by people and by phones; everything after them is dropped.
_SIGNATURE_RES = (
    re.compile(r"^-- ?$", re.M),
    re.compile(r"^[ \t]*(Sent from my \w+|Sent from (Mail|Outlook|Yahoo Mail|my mobile)|Get Outlook for \w+|"
               r"Отправлено (с|из) [^\n]*|Sent via [^\n]*|Envoyé de mon \w+|Von meinem \w+ gesendet)", re.M | re.I),
)


def _reply_text(body: str) -> str:
    """Return the new text of a reply, without quoted history or signature."""
    # A person's new words come first; reading a bounded head keeps a huge body cheap.
    text = body[:_REPLY_HEAD].replace("\r\n", "\n").replace("\r", "\n")
    cut = len(text)
    for pattern in _QUOTE_START_RES + _SIGNATURE_RES:
        match = pattern.search(text)
        if match and match.start() < cut:
            cut = match.start()
    text = text[:cut]
    # Interleaved '>' quotes with no header line above them are history too.
    lines = [line for line in text.splitlines() if not line.lstrip().startswith(">")]
    return re.sub(r"\n{3,}", "\n\n", "\n".join(lines)).strip()


def _asks_opt_out(subject: str, new_text: str) -> bool:
    """Tell whether a person's own words (not the quoted thread, not our subject) ask to be removed."""
    return bool(_OPT_OUT_WORD_RE.fullmatch(new_text) or asks_to_opt_out(f"{subject}\n{new_text[:_SCAN_LIMIT]}"))
