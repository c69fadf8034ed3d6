"""Reading a person's words on any channel: a request to stop, and a reply's sentiment.

Channel-neutral: an email reply's new text, an SMS, a call note are read by the same rules.
Plugins reach them through `sequencer.channels` (`asks_to_opt_out`, `reply_sentiment`).
"""
from __future__ import annotations

import re

# Revocation "in any reasonable manner" (FCC 24-24, COMPLIANCE.md rule 10; CAN-SPAM's "any
# means" for email): a sentence asking us to stop, besides the whole-message keywords. Errs
# toward opting out: a missed opt-out is the costly mistake. English and Russian.
OPT_OUT_TEXT = re.compile(
    r"\bunsubscribe\b|\bopt(?:-| )?(?:me )?out\b|\bremove (?:me|us|my (?:number|phone|e-?mail|address))\b|"
    r"\btake (?:me|us|my number) off\b|\bno more (?:texts|messages|calls|e-?mails)\b|"
    r"\boff (?:your|the) (?:mailing )?list\b|"
    r"\b(?:stop|quit|cease) (?:texting|txting|messaging|calling|contacting|sending|writing|spamming|e-?mailing)\b|"
    r"\b(?:do not|don'?t|never) (?:e-?mail|contact|write to|message|send me|send us)\b|"
    r"\b(?:do not|don'?t|never) (?:text|txt|call|write)(?: to)? (?:me|us|this number)\b|"
    r"отпиш(?:ите|ись|и)|отписать(?:ся)?|отписк|удалите (?:меня|мой|нас)|исключите (?:меня|нас)|"
    r"не (?:пишите|звоните|присылайте|отправляйте|беспокойте)|больше не (?:пишите|присылайте|пишете)|"
    r"(?:хватит|прекратите|перестаньте) (?:мне |нам )?(?:писать|звонить|слать|присылать|рассылку|спамить)",
    re.I,
)
_NEGATIVE_RE = re.compile(
    r"\bnot (interested|a (good )?fit|relevant|looking|now|the right)\b|\bno,? thanks?\b|\bno thank you\b|"
    r"\bnot at this time\b|\bwe('re| are) (all )?(set|good|covered)\b|\balready (have|use|using|work with)\b|"
    r"\bno (need|interest|budget)\b|\bnot for us\b|\bplease stop\b|\bpass on this\b|\bwon'?t be\b|"
    r"\bunsubscribe\b|\bremove me\b|\bstop\b|\bspam\b|\bnot a priority\b|\bdecline\b|"
    r"не интерес|неинтерес|не актуальн|неактуальн|не нужн|ненужн|не надо|не подходит|нам не|"
    r"уже (есть|используем|работаем)|нет,? спасибо|спасибо,? нет|отпиш|не пишите|откаж|"
    r"^\s*нет\b|^\s*no\b",
    re.I | re.M,
)
_POSITIVE_RE = re.compile(
    r"\binterested\b|\bsounds (good|great|interesting)\b|\blet'?s (talk|chat|connect|meet|schedule|set up|do it|book)\b|"
    r"\b(schedule|book|set up|arrange) (a |the )?(call|meeting|demo|time)\b|\bcall me\b|\bhappy to (talk|chat|meet|connect)\b|"
    r"\btell me more\b|\bsend (me |over )?(more )?(info|information|details|pricing|a proposal)\b|"
    r"\b(yes|sure|absolutely|definitely)\b|\bwould love to\b|\bkeen\b|\bworks for me\b|\bgreat timing\b|"
    r"\bwhen are you (free|available)\b|\bavailable (on|at|next|this|tomorrow)\b|"
    r"интересн|давайте|созвон|звоните|удобно|пришлите|расскажите|подробнее|с удовольствием|"
    r"договорились|^\s*да\b|актуальн|демо|встреч",
    re.I | re.M,
)


def asks_to_opt_out(text: str) -> bool:
    """Tell whether a person's words ask us to stop contacting them ("unsubscribe", "don't call me", "отпишите")."""
    return OPT_OUT_TEXT.search(text) is not None


def read_reply_sentiment(text: str) -> str:
    """Return "positive", "negative" or "neutral" for the new text of a reply."""
    # Negative phrases are checked first so "not interested" never counts as "interested".
    if _NEGATIVE_RE.search(text) or asks_to_opt_out(text):
        return "negative"
    return "positive" if _POSITIVE_RE.search(text) else "neutral"
