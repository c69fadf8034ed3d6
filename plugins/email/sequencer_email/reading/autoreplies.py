"""Auto-replies: RFC 3834 headers, out-of-office wording and the return date an auto-reply gives."""
from __future__ import annotations

import datetime
import email
import email.message
import re

from sequencer_email.reading.decoding import _header, _SCAN_LIMIT
from sequencer_email.reading.notices import _REPLY_PREFIX_RE
from sequencer_email.reading.readings import AddressReading, _empty, MailReading, _unique


# Subjects autoresponders write in front of (or instead of) ours: Outlook/Exchange "Automatic
# reply:", Gmail/most "Out of Office:", sisimai's RFC 3834 list, and the localised forms.
_AUTO_SUBJECT_RE = re.compile(
    r"\s*\[?(out of (the )?office|automatic reply|auto(matic)?[- ]?(reply|response|answer)|autoreply|auto:|"
    r"vacation (reply|response|message|notice|autoreply)?|away (from (the )?office|until|till)|on vacation|on leave|\bOOO\b|"
    r"abwesen(d|heit)|automatische antwort|réponse automatique|absence|respuesta automática|fuera de la oficina|"
    r"risposta automatica|fuori sede|resposta automática|automatisch antwoord|niet aanwezig|"
    r"odpowiedź automatyczna|автоматический ответ|автоответ|нет на месте|в отпуске|отсутству|вне офиса|"
    r"自動応答|自动回复|自動回覆)",
    re.I,
)


# Only wordings a person would not put in a real reply, so a human "I'll be back Monday" stays a reply.
_AUTO_BODY_RE = re.compile(
    r"i am (currently )?out of (the )?office|i'?m (currently )?out of (the )?office|"
    r"away from (the|my) (office|desk)|out of (the )?office (until|till|through)|"
    r"limited access to (my )?e-?mail|i am (currently )?on (vacation|holiday|annual leave)|"
    r"this is an automatic (reply|response|message)|"
    r"нахожусь в отпуске|я в отпуске|в командировке|нет на месте|отсутствую|автоматический ответ|не в офисе",
    re.I,
)


def _auto_reply_headers(msg: email.message.Message) -> bool:
    """Tell whether the headers say a machine answered on a person's behalf (RFC 3834 and common practice)."""
    auto = _header(msg, "Auto-Submitted").lower()
    if auto and not auto.startswith("no"):
        return True
    # X-Auto-Response-Suppress is not here: it asks *others* not to answer, and Outlook puts it on
    # ordinary mail a person writes.
    if any(msg.get(h) is not None for h in ("X-Autoreply", "X-Autorespond")):
        return True
    if _header(msg, "Precedence").lower() in ("auto_reply", "bulk", "junk"):
        return True
    return _header(msg, "X-Apple-Action").lower() == "vacation"


def _auto_reply_wording(subject: str, new_text: str) -> bool:
    """Tell an autoresponder by its subject (unless it is a person's "Re:") or the new text it wrote."""
    if not _REPLY_PREFIX_RE.match(subject) and _AUTO_SUBJECT_RE.match(subject):
        return True
    return bool(_AUTO_BODY_RE.search(new_text[:2000]))


# Phrases that introduce the day someone is back; the date follows them.
_RETURN_PHRASE_RE = re.compile(
    r"(back (in the office |at work |in office )?(on|by)?|return(ing)? (to (the )?(office|work) )?(on)?|"
    r"returning|\buntil\b|\btill\b|\bthrough\b|\bthru\b|\bunt\.|"
    r"вернусь|выйду|буду (в офисе |на связи |на работе )?(с|после)?|\bдо\b|\bпо\b|отсутствую)\s*",
    re.I,
)


def _return_date(text: str, today: datetime.date) -> datetime.date | None:
    """Read the date a person is back from an out-of-office text."""
    for match in _RETURN_PHRASE_RE.finditer(text):
        words = re.split(r"\s+", text[match.end():match.end() + 60].strip())
        for size in range(min(len(words), 5), 0, -1):
            snippet = re.sub(r"^(the|on|a|с|на)\s+", "", " ".join(words[:size]), flags=re.I).strip(" .,;:!)(")
            found = _numeric_date(snippet, today) or _parse_date(snippet, today)
            if found is not None:
                return found
    return None


_DAY_WORD_RE = re.compile(
    r"monday|tuesday|wednesday|thursday|friday|saturday|sunday|tomorrow|"
    r"понедельник|вторник|сред[ау]|четверг|пятниц[ау]|суббот[ау]|воскресенье|завтра",
    re.I,
)


def _numeric_date(snippet: str, today: datetime.date) -> datetime.date | None:
    """Read "12.01", "12/01/2026" or "2026-01-12" (day first, as in Europe and Russia)."""
    iso = re.fullmatch(r"(\d{4})-(\d{1,2})-(\d{1,2})", snippet)
    dmy = re.fullmatch(r"(\d{1,2})[./](\d{1,2})(?:[./](\d{2,4}))?", snippet)
    try:
        if iso:
            return datetime.date(int(iso.group(1)), int(iso.group(2)), int(iso.group(3)))
        if dmy:
            year = int(dmy.group(3)) if dmy.group(3) else today.year
            year += 2000 if year < 100 else 0
            found = datetime.date(year, int(dmy.group(2)), int(dmy.group(1)))
            # Without a year the date is the next one to come.
            return found.replace(year=year + 1) if found < today and not dmy.group(3) else found
    except ValueError:
        return None
    return None


def _parse_date(snippet: str, today: datetime.date) -> datetime.date | None:
    """Read a written date ("14 January", "15 января", "Monday") with dateparser."""
    has_digit = bool(re.search(r"\d", snippet))
    if not has_digit and not _DAY_WORD_RE.fullmatch(snippet):
        return None
    import dateparser  # Imported lazily: it is slow to load and only auto-replies need it.

    settings: dict = {"RELATIVE_BASE": datetime.datetime.combine(today, datetime.time(12)), "PREFER_DATES_FROM": "future", "DATE_ORDER": "DMY"}
    if has_digit:
        # A bare time ("until 5pm") is not a return date.
        settings["REQUIRE_PARTS"] = ["day"]
    parsed = dateparser.parse(snippet, languages=["en", "ru"], settings=settings)
    return parsed.date() if parsed else None


def _auto_reply(sender: str, subject: str, text: str, refs: list[str], today: datetime.date, base: dict) -> MailReading:
    """Return an auto-reply reading with the return date its text gives, if any."""
    back = _return_date(f"{subject}\n{text[:_SCAN_LIMIT]}", today)
    readings = [AddressReading(sender, "auto_reply", "", "vacation")] if sender else []
    return _empty("auto_reply", addresses=tuple(readings), references=_unique(refs), return_date=back, **base)
