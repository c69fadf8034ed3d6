"""Read one inbound email the way a deliverability expert would.

A pure module: it parses the bytes of one RFC 5322 message and says what it is
(a human reply, an auto-reply, a bounce, a complaint, a delivery report, or a mail
system's notification that names no failed recipient), which recipients it is about and
why, and whether those recipients must be suppressed.  Nothing here touches a database or
the network.  The rules, in order and with where each comes from, are in docs/inbound.md.

A mail system's notice (null reverse path, MAILER-DAEMON / postmaster sender, a report,
a delivery-failure subject) is never read as a person's reply, and a subject that starts
with "Re:" is our own words coming back, so it never decides an auto-reply or a bounce.

Bounce causes are decided from the diagnostic text first and the DSN status code
second, because the same code (5.7.1, 5.0.0, even 5.1.1) is used by real servers
for user-unknown, blocklist, spam verdicts and policy rejections alike.  The reason
names follow sisimai's vocabulary so the corpus in shared/data/bounces can check us.
"""

from __future__ import annotations

import datetime
import email
import email.header
import email.message
import email.policy
import email.utils
import html
import json
import re
from dataclasses import asdict, dataclass
from html.parser import HTMLParser
from typing import Iterable

__all__ = [
    "AddressReading",
    "MailReading",
    "as_dict",
    "read_message",
    "read_reply_sentiment",
]


@dataclass(frozen=True)
class AddressReading:
    """One recipient a bounce, complaint or report is about."""

    address: str
    cause: str
    status: str
    reason: str


@dataclass(frozen=True)
class MailReading:
    """What one inbound message is and what it says."""

    kind: str
    addresses: tuple[AddressReading, ...]
    suppress: bool
    sender: str
    subject: str
    message_id: str
    references: tuple[str, ...]
    return_date: datetime.date | None
    reply_text: str
    opt_out: bool
    sentiment: str
    # Why a message is kind "notification" (a mail system's notice naming no failed recipient).
    notification_reason: str = ""


# --------------------------------------------------------------------------
# Reason -> cause.  Derived from shared/data/bounces/expected.json, where every
# sisimai reason maps to exactly one category; only the first group suppresses.
# --------------------------------------------------------------------------
REASON_CAUSE: dict[str, str] = {
    # The address itself is dead: stop and suppress (COMPLIANCE rule 5).
    "userunknown": "recipient_invalid",
    "hostunknown": "recipient_invalid",
    "hasmoved": "recipient_invalid",
    "notaccept": "recipient_invalid",  # null MX / domain accepts no mail
    # Our side is the cause: hold the mailbox, never blame the lead.
    "authfailure": "sender_problem",
    "badreputation": "sender_problem",
    "blocked": "sender_problem",
    "norelaying": "sender_problem",
    "notcompliantrfc": "sender_problem",
    "policyviolation": "sender_problem",
    "requireptr": "sender_problem",
    "securityerror": "sender_problem",
    "spamdetected": "sender_problem",
    "speeding": "sender_problem",
    # Try again later.
    "exceedlimit": "transient",
    "expired": "transient",
    "mailboxfull": "transient",
    "mailererror": "transient",
    "networkerror": "transient",
    "onhold": "transient",
    "systemerror": "transient",
    "systemfull": "transient",
    "toomanyconn": "transient",
    "undefined": "transient",
    # Neither the address nor our setup is clearly at fault.
    "contenterror": "other",
    "filtered": "other",
    "mesgtoobig": "other",
    "rejected": "other",
    "suspend": "other",
    "syntaxerror": "other",
    "virusdetected": "other",
    # Not failures at all.
    "vacation": "auto_reply",
    "delivered": "delivered",
    "feedback": "complaint",
}

# ARF Feedback-Type values that mean "this person does not want our mail".
# auth-failure / not-spam / dmarc reports are about our setup, not the person.
SUPPRESSING_FEEDBACK = frozenset({"abuse", "fraud", "virus", "opt-out", "opt-out-list", "other"})

# --------------------------------------------------------------------------
# Diagnostic text patterns per reason, tried in this order: the more specific
# verdicts come before the generic ones they contain ("over quota" mentions no
# user, "blocked ... spamhaus" mentions spam, "user unknown" is a catch-all).
# --------------------------------------------------------------------------
_REASON_PATTERNS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("mailboxfull", (
        r"over ?quota", r"quota (exceeded|full)", r"exceeded (his|her|the|their)? ?(storage|quota)",
        r"mailbox (is |was )?(full|over)", r"not enough (disk )?(storage|space)", r"mailbox size limit", r"insufficient (disk )?space",
        r"not enough (storage|space)", r"disk quota", r"(account|inbox|mailbox) is full",
        r"exceeds? (the )?(mailbox|storage) (quota|limit|size)", r"mailbox has exceeded",
        r"storage (quota|limit)", r"user has (too many messages|exceeded)", r"full mailbox",
        r"mail ?box full", r"too much mail data", r"quota violation", r"maildir over",
        r"exceeded storage allocation",
    )),
    ("mesgtoobig", (
        r"message (size )?(is )?too (large|big)", r"message size exceeds", r"size limit",
        r"message (length )?exceeds (the )?(maximum|fixed)", r"mail size", r"too big for",
        r"message file too big", r"exceeds (the )?maximum (allowed )?(message )?size",
    )),
    ("exceedlimit", (r"exceeds? administrative limit", r"message length exceeds",)),
    ("suspend", (
        r"account (has been |is |was )?(temporarily )?(disabled|suspended|deactivated|locked|frozen|inactivated|on hold)",
        r"(mailbox|user|recipient) (has been |is |was )(temporarily )?(disabled|suspended|deactivated|locked|frozen|inactivated)",
        r"(disabled|suspended|inactive|expired|locked) (account|mailbox|recipient|user)",
        r"boite du destinataire (archivee|fermee)", r"mailbox (is )?inactive",
        r"account (is )?(unavailable|closed|expired|inactive)",
    )),
    ("hasmoved", (r"has (been )?moved", r"no longer (at|with) this", r"address has changed",)),
    ("norelaying", (
        r"relay(ing)? (access |is )?(denied|not (permitted|allowed))", r"not permitted to relay",
        r"unable to relay", r"we do not relay", r"relay not permitted", r"does not relay",
        r"cannot relay", r"not (a )?(local|gateway) (domain|host)",
    )),
    ("notaccept", (
        r"null mx", r"(couldn'?t|could not|cannot) find (a |any )?mail exchanger", r"does not accept (e-?)?mail", r"not accepting (e-?)?mail", r"accepts no mail",
        r"no mail (is )?accepted", r"domain (does not|doesn't) (receive|accept)",
    )),
    ("authfailure", (
        r"\bspf\b", r"\bdkim\b", r"\bdmarc\b", r"sender policy framework", r"5\.7\.2[3-6]\b",
        r"5\.7\.509", r"authentication (check )?(failed|failure)", r"unauthenticated",
        r"sender id", r"not (pass|passed) (authentication|dmarc)",
    )),
    ("requireptr", (
        r"reverse (dns|lookup|hostname|address)", r"\bptr\b", r"\brdns\b", r"5\.7\.25\b",
        r"cannot find your (host ?name|reverse)", r"(client host|your host) .{0,80}name lookup",
        r"no reverse", r"ip name (lookup|possibly forged)", r"cannot resolve (your|the) (address|ip|hostname)",
        r"hostname does not resolve", r"unresolv(ed|able) (ip|host|address)", r"dns ?ptr",
        r"not able to resolve",
    )),
    # "Sender address rejected" names an address too: read it before the recipient patterns.
    ("rejected", (
        r"sender (address |domain )?(rejected|denied|refused|blocked)", r"sender verif", r"5\.1\.[78]\b",
        r"(domain|address) of sender", r"bad sender", r"sender address (is )?(invalid|unknown)",
        r"invalid sender", r"unverified sender", r"not (a )?member of", r"are not member",
        r"(from|sender)( address)?:? domain (is )?(invalid|not exist)",
    )),
    ("networkerror", (r"malformed or unexpected name server", r"name server (reply|failure|timeout)", r"servfail",)),
    ("hostunknown", (r"domain may not exist", r"(?<![@\w.-])[a-z0-9-]+(\.[a-z0-9-]+)*\.[a-z]{2,} does not exist",)),
    ("userunknown", (
        r"user ?unknown", r"no valid recipients", r"ディレクトリのリストにありません", r"unknown (user|recipient|mailbox|local[- ]?part|e-?mail address|address)",
        r"no such (user|mailbox|recipient|person|address|account)", r"user (does not|doesn't) exist",
        r"(user|mailbox|recipient|address|account|e-?mail address) (does not|doesn't|did not|not) exists?",
        r"(user|mailbox|recipient|address) (was )?not found", r"(invalid|bad) (recipient|mailbox|address|user)",
        r"not a valid (user|mailbox|recipient|address)",
        r"is not a known user", r"no mailbox", r"mailbox (is )?unavailable", r"mailbox not (present|available)",
        r"(user|recipient) (not|isn'?t) (known|local|valid|listed)", r"not our customer",
        r"couldn'?t be found", r"could not be found", r"recipientnotfound", r"recipient not found",
        r"no (account|one) (by that name|at this address)", r"does not have an account",
        r"doesn'?t have a .{1,40} account", r"address (is )?(invalid|unknown)", r"addressee unknown",
        r"undeliverable address", r"bad destination mailbox",
        r"is not a valid mailbox", r"not listed in", r"this account has been", r"no longer (valid|available|in use)",
        r"utilisateur inconnu", r"destinataire inconnu", r"mailbox unknown", r"account (is )?not exist",
        r"\bbad-?rcpt", r"validrcptto", r"badrecipientto", r"nonexistent", r"non-existent",
        r"unknown or illegal alias", r"not (have|having) a mailbox", r"access denied\. invalid",
        r"account that you tried to reach does not exist",  # Gmail's 550 5.1.1
    )),
    ("filtered", (
        r"filtered", r"refused by (the )?recipient", r"recipient.{0,20}refus", r"due to .{0,20}(user|recipient)'?s? (preference|setting)",
        r"not (authorized|allowed) to (send|receive)", r"rejected by (the )?recipient",
        r"content filter", r"message filter",
    )),
    ("rejected", (
        r"mail from .{0,60}(rejected|refused)", r"sender (domain )?(must|does not) (exist|resolve)",
        r"envelope sender", r"sender is not (allowed|permitted)", r"rejected (by|for) (the )?(sender|your)",
        r"from address (is )?(invalid|rejected)", r"only members", r"your address", r"address is not allowed",
    )),
    ("hostunknown", (
        r"host (or domain name )?not found", r"host \S+ not found", r"dns lookup fail", r"unknown (host|domain)", r"(domain|host) (name )?(not found|unknown|does not exist|doesn'?t exist)",
        r"no such (domain|host)", r"name or service not known", r"unroutable (mail )?domain", r"unrouteable address",
        r"host unknown", r"nxdomain", r"domain (is )?(invalid|not exist)", r"no (mx|dns|valid mx)",
        r"mx (record|lookup)", r"unable to (resolve|route)", r"unrouteable (mail )?domain",
        r"dns (error|failure|lookup failed)", r"hostname lookup failed",
    )),
    ("badreputation", (r"reputation",)),
    ("blocked", (
        r"blacklist", r"black list", r"blocklist", r"block list", r"\brbl\b", r"dnsbl", r"spamhaus",
        r"spamcop", r"sorbs", r"barracuda", r"banned", r"blocked", r"(ip|host|address) .{0,40}listed",
        r"client host .{0,60}rejected", r"connection (rejected|refused) (by|from|for)",
        r"poor (sending )?reputation", r"denied by policy", r"not allowed from your",
    )),
    ("speeding", (r"rate ?limit", r"sending rate", r"too many (messages|mails|emails|recipients)", r"rate of", r"try again later\..{0,40}volume",)),
    ("toomanyconn", (r"too many (connections|concurrent|sessions|smtp)", r"connection limit", r"too many simultaneous",)),
    ("spamdetected", (
        r"\bspam\b", r"junk mail", r"unsolicited", r"bulk (mail|e-?mail)", r"looks like spam",
        r"message content rejected", r"spam[- ]?(score|detected|filter|content|like|message)", r"spamming",
    )),
    ("virusdetected", (r"virus", r"malware", r"infected", r"trojan",)),
    ("policyviolation", (r"policy", r"violat", r"prohibited", r"not allowed", r"forbidden",)),
    ("notcompliantrfc", (r"rfc ?(5322|2822|822|1035)", r"not (rfc[- ]?)?compliant", r"duplicate header", r"multiple (from|to|subject|date|message-id)", r"headers? (is |are )?(missing|malformed|invalid)",)),
    ("securityerror", (
        r"tls (required|is required)", r"starttls", r"encryption (is )?required", r"authentication (is )?required",
        r"access denied", r"security", r"must (use|issue) ", r"certificate",
    )),
    ("contenterror", (r"content", r"mime", r"8-?bit", r"illegal (attachment|character)", r"attachment",)),
    # Bare "recipient address rejected" only means a dead address when nothing more specific was said.
    ("userunknown", (r"recipient (address )?rejected", r"address rejected",)),
    ("systemfull", (r"system (is )?full", r"insufficient system storage", r"out of (disk )?space",)),
    ("networkerror", (
        r"network (is )?unreachable", r"no route to host", r"routing loop", r"mail loop",
        r"too many hops", r"hop count", r"loop(s)? (back|detected)", r"connection (timed out|reset)",
        r"lost connection", r"could not connect", r"unable to connect", r"connection refused",
    )),
    ("expired", (
        r"retry (timeout|time|period) (exceeded|expired)", r"could not be delivered (within|for)",
        r"delivery time ?expired", r"(message|mail) expired", r"has been delayed", r"delayed",
        r"giving up", r"too long", r"still (could not|undeliverable|not delivered)", r"queue",
        r"timed? ?out", r"\d+ (days|hours)", r"expired",
    )),
    ("systemerror", (
        r"system error", r"internal (server )?error", r"temporar(y|ily) (local )?(problem|failure|error|unavailable)",
        r"server (error|failure)", r"local error", r"service (not available|unavailable)", r"system (config|problem)",
        r"configuration error", r"i/o error", r"try again later",
    )),
    ("mailererror", (r"mailer error", r"x-unix", r"command (died|failed)", r"procmail", r"pipe to", r"exit (status|code)",)),
    ("syntaxerror", (r"syntax error", r"command unrecognized", r"unrecognized command", r"bad sequence",)),
)
_COMPILED_REASONS = tuple((name, re.compile("|".join(pats))) for name, pats in _REASON_PATTERNS)

# RFC 3463 (and later registered) status codes, by subject.detail, as a fallback
# when the text names no reason.  Class 4 and 5 share the meaning.
_STATUS_REASON: dict[str, str] = {
    "1.1": "userunknown", "1.2": "hostunknown", "1.3": "userunknown", "1.4": "userunknown",
    "1.6": "hasmoved", "1.7": "rejected", "1.8": "rejected", "1.10": "notaccept",
    "2.0": "filtered", "2.1": "suspend", "2.2": "mailboxfull", "2.3": "exceedlimit", "2.4": "systemerror",
    "3.0": "systemerror", "3.1": "systemfull", "3.2": "notaccept", "3.3": "systemerror",
    "3.4": "mesgtoobig", "3.5": "systemerror",
    "4.0": "networkerror", "4.1": "expired", "4.2": "networkerror", "4.3": "systemerror",
    "4.4": "hostunknown", "4.5": "systemfull", "4.6": "networkerror", "4.7": "expired",
    "5.0": "syntaxerror", "5.1": "syntaxerror", "5.2": "syntaxerror", "5.3": "syntaxerror",
    "5.4": "syntaxerror", "5.5": "syntaxerror", "5.6": "syntaxerror",
    "6.0": "contenterror", "6.1": "contenterror", "6.2": "contenterror", "6.3": "contenterror",
    "6.4": "contenterror", "6.5": "contenterror",
    "7.0": "securityerror", "7.1": "blocked", "7.2": "securityerror", "7.3": "securityerror",
    "7.4": "securityerror", "7.5": "securityerror", "7.6": "securityerror", "7.7": "securityerror",
    "7.8": "securityerror", "7.9": "policyviolation", "7.13": "suspend", "7.17": "suspend",
    "7.18": "suspend", "7.20": "authfailure", "7.21": "authfailure", "7.22": "authfailure",
    "7.23": "authfailure", "7.24": "authfailure", "7.25": "requireptr", "7.26": "authfailure",
    "7.27": "notaccept",
}

_STATUS_RE = re.compile(r"(?<![\d.])([245])\.(\d{1,3})\.(\d{1,3})(?![\d.])")
_ADDRESS_RE = re.compile(r"[\w.!#$%&'*+/=?^`{|}~-]+@[\w-]+(?:\.[\w-]+)+", re.UNICODE)

# --------------------------------------------------------------------------
# Recognising what a message is.
# --------------------------------------------------------------------------
# Who sends notices: the null-sender and role names of RFC 5321 §4.5.5 / RFC 2142 (MAILER-DAEMON,
# postmaster), the display names MTAs put on them (Postfix "Mail Delivery System", Exim "Mail
# Delivery System", Exchange "Microsoft Outlook" / "System Administrator", Sendmail "Mail
# Delivery Subsystem") and mailing-list robots (RFC 2369 -request / -owner, Mailman -bounces).
_DAEMON_FROM_RE = re.compile(
    r"mailer[-_ ]?daemon|post[-_ ]?master|mail ?delivery (system|subsystem|service)|mail administrator|"
    r"system administrator|mail system|delivery (status|subsystem|notification)|mail delivery|"
    r"returned mail|nobody@|internet mail|mdaemon|majordomo|listserv|\bfml\b|errors?-to|"
    r"-admin@|-owner@|owner-|-request@|-bounces?@|bounces?@|ndr administrator|"
    r"\bno-?reply@|do-?not-?reply@",
    re.I,
)
# A subject that starts with one of these is a person answering the subject we wrote (RFC 5322
# §3.6.5 "Re:" and the localised forms clients write), so its words are ours, not a verdict.
_REPLY_PREFIX_RE = re.compile(
    r"\s*(\[[^\]]{0,40}\]\s*)?(re|aw|sv|vs|antw|antwort|odp|ref|rif|r|res|resp|ynt|ответ|отв|回复|答复|回覆)\s*(\[\d+\]|\(\d+\))?\s*[:：]",
    re.I,
)
_FORWARD_PREFIX_RE = re.compile(r"\s*(fwd?|fw|tr|wg|rv|enc|doorst|pd|пересл|переслано)\s*:\s*", re.I)
# Delivery-failure subjects as MTAs write them, in the languages their localised notices use
# (Exchange / Office 365 translate "Undeliverable" and "Delivery Status Notification (Failure)").
_BOUNCE_SUBJECT_RE = re.compile(
    # English: Postfix, Exim, Sendmail, qmail, Exchange, Gmail, Yahoo, Domino, OpenSMTPD.
    r"undeliver|undelivered|returned mail|mail delivery (failed|failure|system)|delivery (status )?notification|"
    r"delivery (has )?fail|failure notice|delivery failure|non[- ]?delivery|mail system error|"
    r"returned to sender|could not (be )?deliver|delivery problem|warning: could not|"
    r"message (not delivered|delayed|rejected|undeliverable)|delivery report|delivery (error|incomplete|delayed)|"
    r"mail failure|bounced? (mail|message|notification)|error sending|sending failed|failed delivery|unable to deliver|"
    r"\bdelayed (mail|message|delivery)\b|mail failed|returning to sender|"
    # Russian (mail.ru, Yandex, Exchange ru), German, French, Spanish, Italian, Portuguese, Dutch, Polish.
    r"недоставлен|не доставлен|ошибка доставки|не удалось доставить|возвращ[её]нное (письмо|сообщение)|"
    r"уведомление о (статусе )?доставк|"
    r"unzustellbar|nicht zustellbar|zustellung fehlgeschlagen|übermittlungsstatus|"
    r"non remis|non distribuable|échec de (la )?(remise|distribution)|notification d'état de (la )?remise|"
    r"message non (remis|délivré|distribué)|"
    r"no se (puede|pudo) entregar|no entregad[oa]|error de entrega|notificación de estado de (la )?entrega|"
    r"non recapitabile|mancato recapito|non recapitat[oa]|impossibile recapitare|stato della consegna|"
    r"não (é possível|foi possível) entregar|não entregue|falha (na|de) entrega|notificação de status de entrega|"
    r"onbestelbaar|niet bezorgd|kan niet worden bezorgd|bezorgingsstatus|"
    r"niedostarcz|nie można dostarczyć|stanie dostarczenia|"
    # Japanese and Chinese carriers and providers.
    r"メールエラー|エラー通知|配信エラー|配送エラー|送信エラー|不達|配信失敗|送信失敗|"
    r"退信|投递失败|投遞失敗|未送达|无法投递|無法傳遞|递送状态通知|傳遞狀態通知",
    re.I,
)
# Failure wording in the text of a notice (what MTAs write above the returned message).
_BOUNCE_BODY_RE = re.compile(
    r"(could not|couldn'?t|was not|cannot|unable to|failed to) (be )?deliver|permanent(ly)? (error|fatal)|"
    r"delivery (to the following recipients? )?(has )?failed|undeliverable|returned to sender|"
    r"following address(es)? (had|failed)|message could not be sent|mail system at host|"
    r"not delivered|delivery (status|failure)|no valid recipients|failed addresses|transcript of session|"
    r"not a member of|could not be delivered|has been delayed|"
    r"не (может быть|удалось|было) доставлен|не доставлено|nicht zugestellt|konnte nicht zugestellt|"
    r"n'a pas pu être (remis|distribué)|no (se )?pudo (ser )?entregad|non è stato possibile recapitare|"
    r"não foi possível entregar|kon niet worden bezorgd|nie (może|mogła) zostać dostarczon|"
    r"配信できませんでした|届きませんでした|无法投递|无法送达|退回",
    re.I,
)
# Notices about mail that say nothing failed for a recipient: mailing-list loop and moderation
# alerts (Mailman, Sympa, Google Groups), read receipts.
_NOTICE_SUBJECT_RE = re.compile(
    r"mail loop|loop (detected|alert)|looping|held for moderation|awaits? moderator|moderator approval|"
    r"read receipt|return receipt|прочитано:|уведомление о прочтении",
    re.I,
)
_COMPLAINT_SUBJECT_RE = re.compile(r"complaint about message|abuse report|spam report|feedback report", re.I)
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
# A one-word answer that asks to stop (COMPLIANCE rule 10's keywords, English and Russian).
_OPT_OUT_WORD_RE = re.compile(
    r"\s*(stop|stopall|unsubscribe|cancel|end|quit|revoke|opt-?out|remove|стоп|отписаться|отписка|отпишите)\s*[.!]*\s*",
    re.I,
)


# --------------------------------------------------------------------------
# Decoding.
# --------------------------------------------------------------------------
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


# --------------------------------------------------------------------------
# Message structure.
# --------------------------------------------------------------------------
@dataclass
class _Parts:
    plain: list[str]
    html: list[str]
    dsn: list[str]
    feedback: list[str]
    returned: list[email.message.Message]
    returned_headers: list[str]


_DSN_TYPES = frozenset({"message/delivery-status", "message/global-delivery-status"})
_RFC822_TYPES = frozenset({"message/rfc822", "message/global", "message/partial"})
_HEADERS_TYPES = frozenset({"text/rfc822-headers", "message/rfc822-headers", "text/rfc822-header", "message/global-headers"})


def _collect(part: email.message.Message, acc: _Parts) -> None:
    """Sort the leaves of a message by role, without descending into returned messages."""
    ctype = part.get_content_type()
    payload = part.get_payload()
    if ctype in _RFC822_TYPES:
        inner = payload[0] if isinstance(payload, list) and payload else None
        if inner is None and isinstance(payload, str):
            inner = email.message_from_string(_part_text(part) or payload, policy=email.policy.compat32)
        if inner is not None:
            acc.returned.append(inner)
    elif ctype in _DSN_TYPES:
        acc.dsn.append(_fields_text(part))
    elif ctype == "message/feedback-report":
        acc.feedback.append(_fields_text(part))
    elif part.is_multipart() and isinstance(payload, list):
        for sub in payload:
            _collect(sub, acc)
    elif part.get_content_maintype() == "multipart":
        # Declared multipart but no boundary ever appears: the body is one block of text.
        acc.plain.append(_part_text(part))
    elif ctype in _HEADERS_TYPES:
        acc.returned_headers.append(_part_text(part))
    elif ctype == "text/html":
        acc.html.append(_part_text(part))
    elif ctype.startswith("text/") or ctype == "application/json":
        if part.get_content_disposition() != "attachment" or not acc.plain:
            acc.plain.append(_part_text(part))


def _fields_text(part: email.message.Message) -> str:
    """Return a delivery-status or feedback-report part as field lines, blocks split by blank lines."""
    payload = part.get_payload()
    if isinstance(payload, list):
        return "\n\n".join(
            "\n".join(f"{k}: {_squash(str(v))}" for k, v in block.items()) for block in payload
        )
    return _part_text(part)


def _squash(text: str) -> str:
    """Collapse runs of whitespace to one space."""
    return re.sub(r"\s+", " ", text).strip()


def _field_blocks(text: str) -> list[dict[str, str]]:
    """Parse 'Name: value' blocks separated by blank lines (continuations joined)."""
    blocks: list[dict[str, str]] = []
    current: dict[str, str] = {}
    last = ""
    for line in text.splitlines():
        if not line.strip():
            if current:
                blocks.append(current)
            current, last = {}, ""
        elif line[:1] in " \t" and last:
            current[last] += " " + line.strip()
        elif ":" in line:
            name, _, value = line.partition(":")
            last = name.strip().lower()
            # Some servers omit the blank line between recipients: a repeated recipient field starts a new one.
            if last in current and last in ("final-recipient", "original-recipient"):
                blocks.append(current)
                current = {}
            current.setdefault(last, value.strip())
    if current:
        blocks.append(current)
    return blocks


# The human-readable part of a text bounce ends where the returned message starts.
_RETURNED_MARKER_RE = re.compile(
    r"^[ \t>]*[-=*_ ]*("
    r"below this line is a copy of the message|this is a copy of the message|"
    r"(the )?original message (follows|headers?|is (attached|below|included)|was (attached|included))|"
    r"original message -|original message\s*:?\s*$|"
    r"(un)?sent message follows|returned message|message headers follow|"
    r"headers of the original message|start of (the )?returned message|included is a copy|"
    r"copy of (the |your )?(original )?message|original message header|"
    r"the (header|headers) of the (original )?message|original mail header"
    r")",
    re.I | re.M,
)
_HEADER_LINE_RE = re.compile(r"^(Received|Return-Path|Message-ID|From|To|Subject|Date|MIME-Version|DKIM-Signature|X-[\w-]+):", re.I)
_DSN_FIELD_RE = re.compile(r"^(Final-Recipient|Original-Recipient|Action|Status|Diagnostic-Code|Remote-MTA|Reporting-MTA):", re.I | re.M)


def _split_returned(text: str) -> tuple[str, str]:
    """Split a text bounce into its explanation and the returned message that follows it."""
    marker = _RETURNED_MARKER_RE.search(text)
    lines = text.splitlines(keepends=True)
    offset = 0
    # A run of three header lines with a Received/Message-ID/Subject also starts the copy.
    for index, line in enumerate(lines):
        window = lines[index:index + 3]
        if len(window) == 3 and all(_HEADER_LINE_RE.match(w) or w[:1] in " \t" for w in window) and _HEADER_LINE_RE.match(line):
            if any(re.match(r"(Received|Message-ID|Subject|Return-Path):", w, re.I) for w in window):
                break
        offset += len(line)
    if marker and marker.start() < offset:
        offset = marker.start()
        rest = text[offset:].split("\n", 1)[1] if "\n" in text[offset:] else ""
        return text[:offset], rest.lstrip("\n")
    return text[:offset], text[offset:]


@dataclass
class _Failure:
    address: str
    action: str
    status: str
    diagnostic: str
    vendor_reason: str = ""  # the reporting MTA's own verdict, when its DSN carries one


# PowerMTA's documented X-PowerMTA-BounceCategory values, in our reason names.
_POWERMTA_CATEGORY = {
    "bad-mailbox": "userunknown", "bad-domain": "hostunknown", "inactive-mailbox": "suspend",
    "quota-issues": "mailboxfull", "spam-related": "spamdetected", "policy-related": "policyviolation",
    "no-answer-from-host": "networkerror", "bad-connection": "networkerror", "routing-errors": "systemerror",
    "message-expired": "expired", "content-related": "contenterror", "protocol-errors": "syntaxerror",
    "relaying-issues": "norelaying", "virus-related": "virusdetected", "invalid-sender": "rejected",
}
# Amazon SES inbound only bounces when the recipient's own receipt rule says so, with a
# reply text the recipient's admin chose: whatever it says, the recipient filtered us.
_RULE_BOUNCE_MTA_RE = re.compile(r"inbound-smtp\.[\w-]+\.amazonaws\.com", re.I)


def _dsn_failures(parts: _Parts, text: str) -> list[_Failure]:
    """Read per-recipient fields of RFC 3464 reports (or the same fields inline in text)."""
    sources = parts.dsn or ([text] if _DSN_FIELD_RE.search(text) and re.search(r"^Final-Recipient:", text, re.I | re.M) else [])
    failures = []
    for source in sources:
        blocks = _field_blocks(source)
        rule_bounce = any(_RULE_BOUNCE_MTA_RE.search(b.get("reporting-mta", "")) for b in blocks)
        for block in blocks:
            recipient = block.get("final-recipient") or block.get("original-recipient") or ""
            address = _address(recipient)
            if not address:
                continue
            status = _STATUS_RE.search(block.get("status", ""))
            diagnostic = re.sub(r"^\s*(smtp|x-[\w-]+|mta|dns)\s*;\s*", "", block.get("diagnostic-code", ""), flags=re.I)
            # Some servers explain the status in a comment: "5.0.0 (Remote SMTP server has rejected address)".
            comment = re.search(r"\(([^)]+)\)", block.get("status", ""))
            if comment and comment.group(1).lower() not in diagnostic.lower():
                diagnostic = f"{diagnostic} ({comment.group(1)})".strip()
            vendor = _POWERMTA_CATEGORY.get(block.get("x-powermta-bouncecategory", "").lower(), "")
            if rule_bounce and _reason_from_text(diagnostic) == "userunknown":
                vendor = "filtered"
            failures.append(_Failure(address, block.get("action", "").lower(), status.group(0) if status else "", diagnostic, vendor))
    return failures


def _text_failures(text: str, exclude: set[str]) -> list[_Failure]:
    """Find the failed recipients of a non-standard bounce in its explanation text."""
    seen: list[str] = []
    for match in _ADDRESS_RE.finditer(text):
        address = match.group(0).strip(".").lower()
        if address not in seen and address not in exclude and not address.startswith(("mailer-daemon@", "mailer_daemon@")):
            seen.append(address)
    return [_Failure(a, "", "", "") for a in seen]


def _context(text: str, address: str, others: list[str]) -> str:
    """Return the paragraphs of a bounce that talk about one recipient, and the one after each."""
    paragraphs = re.split(r"\n\s*\n", text)
    picked: list[str] = []
    for index, paragraph in enumerate(paragraphs):
        lowered = paragraph.lower()
        if address not in lowered:
            continue
        if any(o in lowered for o in others):
            # Several recipients in one paragraph: keep the lines from ours up to the next one's.
            picked.append(_own_lines(paragraph, address, others))
        else:
            picked.extend(paragraphs[index:index + 2])
    return "\n".join(picked)


def _own_lines(paragraph: str, address: str, others: list[str]) -> str:
    """Return the lines of a paragraph from the one naming an address to the one naming another."""
    kept: list[str] = []
    for line in paragraph.splitlines():
        lowered = line.lower()
        if address in lowered:
            kept.append(line)
        elif kept and any(o in lowered for o in others):
            break
        elif kept:
            kept.append(line)
    return "\n".join(kept)


def _reason_from_text(text: str) -> str:
    """Return the first reason whose patterns match the text, or ""."""
    lowered = _squash(text.lower())
    if not lowered:
        return ""
    for name, pattern in _COMPILED_REASONS:
        if pattern.search(lowered):
            return name
    return ""


def _reason_from_status(status: str, action: str) -> str:
    """Return the RFC 3463 reading of a status code, or ""."""
    if action.startswith(("delayed", "expired")):
        return "expired"
    if status.startswith("2."):
        return "delivered"
    _, _, detail = status.partition(".")
    return _STATUS_REASON.get(detail, "")


def _classify(failure: _Failure, context: str, whole: str, *, alone: bool = True) -> tuple[str, str]:
    """Return (reason, status) for one failed recipient; alone says it is the bounce's only one."""
    status = _best_status(failure, context, whole)
    if failure.action in ("delivered", "relayed", "expanded") or status.startswith("2."):
        return "delivered", status
    if failure.action.startswith(("delayed", "expired")):
        # A delay notice is about timing; only its own diagnostic can say more.
        return _reason_from_text(failure.diagnostic) or "expired", status
    if failure.vendor_reason:
        return failure.vendor_reason, status
    command = _smtp_command(failure.diagnostic, context, whole)
    for text in (_remote_reply(failure.diagnostic), failure.diagnostic, _address_lines(context, failure.address), context, whole):
        reason = _reason_from_text(text)
        if reason in ("userunknown", "hostunknown") and command == "MAIL":
            # Refused at MAIL FROM: the unknown address or domain is ours, not the recipient's.
            return "rejected", status
        if reason == "userunknown":
            notice = _reason_from_text(whole) if alone else ""
            # Servers that hide disabled or full mailboxes behind "user unknown" say so in their notice.
            if notice in ("mailboxfull", "suspend"):
                return notice, status
            return _unknown_or_filtered(status, command, text), status
        if reason:
            return reason, status
    return _reason_from_status(status, failure.action) or ("onhold" if failure.diagnostic else "undefined"), status


def _best_status(failure: _Failure, context: str, whole: str) -> str:
    """Return the most precise failure status known for a recipient."""
    status = failure.status
    if status and not status.endswith(".0.0"):
        return status
    # A generic X.0.0 (or none) hides the precise code the remote server gave; success codes in a
    # transcript ("250 2.1.5 Ok") are not the failure.
    # A report that gave a status per recipient is only refined by that recipient's own diagnostic.
    for text in (failure.diagnostic,) if status else (failure.diagnostic, context, whole):
        for found in _STATUS_RE.finditer(text):
            code = found.group(0)
            if not code.startswith("2.") and not code.endswith(".0.0"):
                return code
    return status


def _remote_reply(diagnostic: str) -> str:
    """Return the remote server's own reply quoted inside a relay's diagnostic, or ""."""
    # "5.1.0 - Unknown address error 550-'5.7.1 ... Access denied'": the relay's label comes first.
    found = re.search(r"(?<=\D)[45]\d\d[- ]'?[45]\.\d{1,3}\.\d{1,3}.*", diagnostic)
    return found.group(0) if found and found.start() > 0 else ""


def _address_lines(context: str, address: str) -> str:
    """Return the lines that name an address, each with the line after it."""
    lines = context.splitlines()
    picked = [" ".join(lines[i:i + 2]) for i, line in enumerate(lines) if address in line.lower()]
    return "\n".join(picked)


# Wordings that only ever mean the mailbox does not exist, whatever stage they come at.
_DEFINITE_UNKNOWN_RE = re.compile(r"doesn'?t have an? \S+ account|(user|mailbox|account) (does not|doesn'?t) exist")

_COMMAND_RES = (
    ("DATA", re.compile(r"end of data|(after|in reply to) (the )?data|>>> data\b|smtp command\s*:?\s*data\b|data command", re.I)),
    ("RCPT", re.compile(r"rcpt to|rcpt command|>>> rcpt|(does not|did not) like (our )?(recipient|rcpt)|after rcpt|rcpt_to|"
                        r"recipient address rejected|rejected address", re.I)),
    ("MAIL", re.compile(r"mail from:|after mail from|in reply to mail from", re.I)),
)


def _smtp_command(*texts: str) -> str:
    """Return the SMTP command a rejection answered (DATA, RCPT, MAIL), from the most specific text."""
    for text in texts:
        found = sorted((m.start(), name) for name, pattern in _COMMAND_RES for m in pattern.finditer(text))
        if found:
            return found[-1][1]
    return ""


def _unknown_or_filtered(status: str, command: str, text: str) -> str:
    """Tell a dead address from a content filter that answers "user unknown"."""
    # A server that accepted the recipient at RCPT TO and refused only after DATA is filtering
    # the message, not saying the mailbox is missing (Japanese carriers do this for blocked
    # senders); an X.1.x address status is trusted as it is.
    address_status = status[2:4] == "1."
    if address_status or command == "RCPT" or _DEFINITE_UNKNOWN_RE.search(text.lower()):
        return "userunknown"
    # X.2.0 / X.2.1 say the mailbox exists but refuses; X.0.0 says nothing.
    if command == "DATA" or status[2:] in ("2.0", "2.1", "0.0"):
        return "filtered"
    return "userunknown"


def _reading_for(failure: _Failure, reason: str, status: str, context: str) -> AddressReading:
    """Build the public reading of one recipient; the reason text leads with the sisimai-style label."""
    detail = _squash(failure.diagnostic or context)
    label = f"{reason}: {detail}" if detail else reason
    return AddressReading(failure.address, REASON_CAUSE.get(reason, "other"), status, label[:300])


# --------------------------------------------------------------------------
# Provider JSON notifications (Amazon SES through SNS).
# --------------------------------------------------------------------------
def _ses_notification(text: str) -> dict | None:
    """Return the SES notification object carried in a body, if it is one."""
    start = text.find("{")
    if start < 0 or "notificationType" not in text:
        return None
    try:
        # SNS wraps long lines inside JSON strings, so control characters must be tolerated.
        outer = json.loads(text[start:text.rfind("}") + 1], strict=False)
    except ValueError:
        return None
    inner = outer.get("Message") if isinstance(outer, dict) else None
    if isinstance(inner, str):
        try:
            outer = json.loads(inner, strict=False)
        except ValueError:
            return None
    return outer if isinstance(outer, dict) and "notificationType" in outer else None


def _ses_reading(note: dict) -> tuple[str, list[AddressReading], list[str]]:
    """Read an SES Bounce / Complaint / Delivery notification."""
    kind_name = str(note.get("notificationType", "")).lower()
    mail = note.get("mail") or {}
    refs = [f"<{mail['messageId']}>"] if isinstance(mail, dict) and mail.get("messageId") else []
    readings: list[AddressReading] = []
    if kind_name == "bounce":
        bounce = note.get("bounce") or {}
        for rcpt in bounce.get("bouncedRecipients") or []:
            failure = _Failure(
                str(rcpt.get("emailAddress", "")).lower(), str(rcpt.get("action", "")).lower(),
                str(rcpt.get("status", "")),
                re.sub(r"^\s*smtp\s*;\s*", "", str(rcpt.get("diagnosticCode", "")), flags=re.I),
            )
            reason, status = _classify(failure, "", str(bounce.get("bounceSubType", "")))
            readings.append(_reading_for(failure, reason, status, ""))
        return "bounce", readings, refs
    if kind_name == "complaint":
        complaint = note.get("complaint") or {}
        feedback = str(complaint.get("complaintFeedbackType") or "abuse").lower()
        for rcpt in complaint.get("complainedRecipients") or []:
            readings.append(AddressReading(str(rcpt.get("emailAddress", "")).lower(), "complaint", "", feedback))
        return "complaint", readings, refs
    delivery = note.get("delivery") or {}
    for address in delivery.get("recipients") or mail.get("destination") or []:
        readings.append(AddressReading(str(address).lower(), "delivered", "", "delivered"))
    return "delivery_report", readings, refs


# --------------------------------------------------------------------------
# Complaints (ARF, RFC 5965, and the providers that send their own shape).
# --------------------------------------------------------------------------
def _complaint_readings(msg: email.message.Message, parts: _Parts) -> list[AddressReading]:
    """Return one reading per complaining recipient."""
    report = "\n".join(parts.feedback)
    match = re.search(r"^Feedback-Type:\s*([\w-]+)", report, re.I | re.M)
    feedback = match.group(1).lower() if match else ("opt-out" if _is_apple_unsubscribe(msg) else "abuse")
    found = re.findall(r"^(?:Original-Rcpt-To|Removal-Recipient):\s*(.+)$", report, re.I | re.M)
    addresses = [_address(a) for a in found]
    if not addresses:
        for inner in parts.returned:
            value = inner.get("X-HmXmrOriginalRecipient") or inner.get("To") or ""
            addresses.extend(_address(a) for a in str(value).split(","))
    if not addresses:
        for headers in parts.returned_headers:
            inner = email.message_from_string(headers, policy=email.policy.compat32)
            addresses.extend(_address(a) for a in str(inner.get("To", "")).split(","))
    if not addresses and _is_apple_unsubscribe(msg):
        addresses = [_address(_header(msg, "From"))]
    # An anonymised report still names our message (see references): keep the complaint without an address.
    unique = list(dict.fromkeys(a for a in addresses if a)) or [""]
    return [AddressReading(a, "complaint", "", feedback) for a in unique]


def _is_apple_unsubscribe(msg: email.message.Message) -> bool:
    """Tell whether this is Apple Mail's one-tap unsubscribe message."""
    return _header(msg, "X-Apple-Unsubscribe").lower() == "true"


def _is_complaint(msg: email.message.Message, parts: _Parts, subject: str) -> bool:
    """Tell whether a message is a feedback (abuse / opt-out) report."""
    if parts.feedback or "feedback-report" in _header(msg, "Content-Type").lower():
        return True
    if _is_apple_unsubscribe(msg):
        return True
    # Hotmail-style reports: a complaint subject wrapping the reported message.
    return bool(parts.returned) and bool(_COMPLAINT_SUBJECT_RE.search(subject))


# --------------------------------------------------------------------------
# Auto-replies (RFC 3834 and common practice) and their return dates.
# --------------------------------------------------------------------------
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


# --------------------------------------------------------------------------
# Human replies: the new text, opt-out requests and a simple sentiment.
# --------------------------------------------------------------------------
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

_OPT_OUT_RE = re.compile(
    r"\bunsubscribe\b|\bremove (me|us|my (e-?mail|address))\b|\btake (me|us) off\b|"
    r"\b(stop|quit|cease) (e-?mailing|emailing|contacting|sending|writing|messaging|spamming)\b|"
    r"\b(do not|don'?t|never) (e-?mail|contact|write to|message|send me|send us)\b|"
    r"\bopt(-| )?(me )?out\b|\bno more (e-?mails|emails|messages)\b|\boff (your|the) (mailing )?list\b|"
    r"отпиш(ите|ись|и)|отписать(ся)?|отписк|удалите (меня|мой|нас)|исключите (меня|нас)|"
    r"не (пишите|присылайте|отправляйте|беспокойте)|больше не (пишите|присылайте|пишете)|"
    r"(хватит|прекратите|перестаньте) (мне )?(писать|слать|присылать|рассылку|спамить)",
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


def read_reply_sentiment(text: str) -> str:
    """Return "positive", "negative" or "neutral" for the new text of a reply."""
    # Negative phrases are checked first so "not interested" never counts as "interested".
    if _NEGATIVE_RE.search(text) or _OPT_OUT_RE.search(text):
        return "negative"
    return "positive" if _POSITIVE_RE.search(text) else "neutral"


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


# --------------------------------------------------------------------------
# Putting it together.
# --------------------------------------------------------------------------
def read_message(raw: bytes, *, today: datetime.date | None = None) -> MailReading:
    """Read one inbound message; never raise, an unreadable one is kind "unknown"."""
    try:
        return _read(raw, today or datetime.date.today())
    except Exception:
        return _empty("unknown")


def as_dict(reading: MailReading) -> dict:
    """Return the reading as JSON-ready data (dates as ISO strings)."""
    data = asdict(reading)
    data["addresses"] = [dict(a) for a in data["addresses"]]
    data["references"] = list(reading.references)
    data["return_date"] = reading.return_date.isoformat() if reading.return_date else None
    return data


def _empty(kind: str, **fields: object) -> MailReading:
    """Return a reading with defaults for everything not given."""
    values: dict = {
        "kind": kind, "addresses": (), "suppress": False, "sender": "", "subject": "", "message_id": "",
        "references": (), "return_date": None, "reply_text": "", "opt_out": False, "sentiment": "",
        "notification_reason": "",
    }
    values.update(fields)
    return MailReading(**values)


def _read(raw: bytes, today: datetime.date) -> MailReading:
    """Read a message; may raise on input too broken to parse."""
    msg = _parse(raw)
    if not msg.keys():
        return _empty("unknown")
    parts = _Parts([], [], [], [], [], [])
    _collect(msg, parts)
    subject = _header(msg, "Subject")
    sender = _address(_header(msg, "From"))
    base = {"sender": sender, "subject": subject, "message_id": _first(_message_ids(_header(msg, "Message-ID")))}
    own_refs = _message_ids(_header(msg, "In-Reply-To")) + list(reversed(_message_ids(_header(msg, "References"))))
    text = "\n".join(parts.plain) or "\n".join(_html_to_text(h) for h in parts.html)

    note = _ses_notification(text)
    if note is not None:
        kind, readings, refs = _ses_reading(note)
        return _report(kind, readings, own_refs + refs, base)
    if _is_complaint(msg, parts, subject):
        readings = _complaint_readings(msg, parts)
        return _report("complaint", readings, own_refs + _returned_refs(parts, ""), base)
    explanation, returned_text = _split_returned(_unquote_forward(text, subject))
    failures = _dsn_failures(parts, text)
    notice = _notice_signal(msg, subject, parts)
    null_path = _null_reverse_path(msg)
    # A subject starting with "Re:" is our own words coming back, never a verdict on delivery.
    verdict_subject = "" if _REPLY_PREFIX_RE.match(subject) else subject
    failure_said = bool(_BOUNCE_SUBJECT_RE.search(verdict_subject) or _BOUNCE_BODY_RE.search(explanation))
    if failures or ((notice or null_path or parts.returned) and failure_said):
        readings = _bounce_readings(msg, parts, failures, explanation, returned_text)
        if readings:
            kind = "delivery_report" if all(r.cause == "delivered" for r in readings) else "bounce"
            return _report(kind, readings, own_refs + _returned_refs(parts, returned_text), base)
    refs = _unique(own_refs + _returned_refs(parts, returned_text))
    if notice:
        return _empty("notification", references=refs, notification_reason=notice, **base)
    if _auto_reply_headers(msg):
        return _auto_reply(sender, subject, text, own_refs, today, base)
    new_text = _reply_text(text)
    opt_out = _asks_opt_out(verdict_subject, new_text)
    if not opt_out and _auto_reply_wording(subject, new_text):
        return _auto_reply(sender, subject, text, own_refs, today, base)
    if null_path:
        # RFC 5321 §4.5.5: only notices go out with a null reverse path; a person's mail never does.
        return _empty("notification", references=refs, notification_reason="null reverse path (Return-Path: <>)", **base)
    if not sender and not text.strip():
        return _empty("unknown", **base)
    return _empty(
        "reply", references=_unique(own_refs), reply_text=new_text, opt_out=opt_out,
        sentiment=read_reply_sentiment(new_text), **base,
    )


def _auto_reply(sender: str, subject: str, text: str, refs: list[str], today: datetime.date, base: dict) -> MailReading:
    """Return an auto-reply reading with the return date its text gives, if any."""
    back = _return_date(f"{subject}\n{text[:_SCAN_LIMIT]}", today)
    readings = [AddressReading(sender, "auto_reply", "", "vacation")] if sender else []
    return _empty("auto_reply", addresses=tuple(readings), references=_unique(refs), return_date=back, **base)


def _asks_opt_out(subject: str, new_text: str) -> bool:
    """Tell whether a person's own words (not the quoted thread, not our subject) ask to be removed."""
    return bool(_OPT_OUT_WORD_RE.fullmatch(new_text) or _OPT_OUT_RE.search(f"{subject}\n{new_text[:_SCAN_LIMIT]}"))


def _null_reverse_path(msg: email.message.Message) -> bool:
    """Tell whether the envelope sender was null (RFC 5321 §4.5.5: notices are sent that way)."""
    values = msg.get_all("Return-Path") or []
    return any(str(v).strip() in ("<>", "") for v in values[:1])


def _notice_signal(msg: email.message.Message, subject: str, parts: _Parts) -> str:
    """Return why a message is a mail system's notice rather than a person's mail, or ""."""
    if msg.get_content_type() == "multipart/report":
        report_type = str(msg.get_param("report-type") or "").lower()
        return f"multipart/report ({report_type})" if report_type else "multipart/report"
    if parts.dsn:
        return "delivery-status report"
    if msg.get("X-Failed-Recipients") is not None:
        return "X-Failed-Recipients header (Exim)"
    sender = _header(msg, "From")
    if _DAEMON_FROM_RE.search(sender) or re.search(r"mailer-?daemon|postmaster", _header(msg, "Return-Path"), re.I):
        return f"sent by a mail system ({sender[:120]})"
    if not _REPLY_PREFIX_RE.match(subject) and _BOUNCE_SUBJECT_RE.search(subject):
        return "delivery-notice subject"
    if not _REPLY_PREFIX_RE.match(subject) and _NOTICE_SUBJECT_RE.search(subject):
        return "mail-system notice subject"
    return ""


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


def _unquote_forward(text: str, subject: str) -> str:
    """Remove one level of '>' quoting from a bounce a person forwarded to us."""
    if not re.match(r"\s*(fwd?|tr|wg|пересл)\s*:", subject, re.I):
        return text
    lines = re.sub(r"^> ?", "", text, flags=re.M).splitlines()
    start = next((i for i, line in enumerate(lines) if re.search(r"forwarded message|пересылаемое сообщение", line, re.I)), -1)
    if start < 0:
        return "\n".join(lines)
    # Drop the forwarded message's own header block so it is not taken for the returned copy.
    end = start + 1
    while end < len(lines) and (not lines[end].strip() or _HEADER_LINE_RE.match(lines[end]) or lines[end][:1] in " \t"):
        end += 1
    return "\n".join(lines[:start] + lines[end:])


def _first(values: list[str]) -> str:
    """Return the first value or ""."""
    return values[0] if values else ""


def _unique(values: Iterable[str]) -> tuple[str, ...]:
    """Return the values without repeats, first occurrence kept."""
    return tuple(dict.fromkeys(v for v in values if v))


def _report(kind: str, readings: list[AddressReading], refs: list[str], base: dict) -> MailReading:
    """Return a bounce / complaint / delivery reading with its suppress decision."""
    suppress = any(
        r.cause == "recipient_invalid" or (r.cause == "complaint" and r.reason in SUPPRESSING_FEEDBACK) for r in readings
    )
    return _empty(kind, addresses=tuple(readings), suppress=suppress, references=_unique(refs), **base)


def _returned_refs(parts: _Parts, returned_text: str) -> list[str]:
    """Return the Message-ID and In-Reply-To of the message a report returns to us."""
    headers = list(parts.returned)
    headers += [email.message_from_string(h, policy=email.policy.compat32) for h in parts.returned_headers]
    if returned_text:
        headers.append(email.message_from_string(returned_text.lstrip(), policy=email.policy.compat32))
    refs: list[str] = []
    for inner in headers:
        refs += _message_ids(_header(inner, "Message-ID")) + _message_ids(_header(inner, "In-Reply-To"))
    return refs


def _bounce_readings(
    msg: email.message.Message, parts: _Parts, failures: list[_Failure], explanation: str, returned_text: str,
) -> list[AddressReading]:
    """Return one reading per failed recipient of a bounce."""
    if not failures:
        # Exim names every failed recipient in this header of its bounces.
        listed = [_address(a) for a in _header(msg, "X-Failed-Recipients").split(",")]
        failures = [_Failure(a, "", "", "") for a in dict.fromkeys(listed) if a]
    if not failures:
        failures = _text_failures(explanation, _own_addresses(msg, parts, returned_text))
    if not failures:
        failures = _flufl_failures(msg)
    if not failures:
        failures = [_Failure(a, "", "", "") for a in _returned_recipients(parts, returned_text)]
    active = [f for f in failures if f.action not in ("delivered", "relayed", "expanded")] or failures
    readings = []
    for failure in active:
        others = [f.address for f in active if f.address != failure.address]
        context = _context(explanation, failure.address, others)
        reason, status = _classify(failure, context, explanation, alone=len(active) == 1)
        readings.append(_reading_for(failure, reason, status, context))
    return readings


def _own_addresses(msg: email.message.Message, parts: _Parts, returned_text: str) -> set[str]:
    """Return addresses in a bounce that are ours (the sender), not failed recipients."""
    own = {_address(_header(msg, h)) for h in ("From", "To", "Return-Path", "Reply-To")}
    returned = list(parts.returned)
    if returned_text:
        returned.append(email.message_from_string(returned_text.lstrip(), policy=email.policy.compat32))
    own |= {_address(_header(inner, h)) for inner in returned for h in ("From", "Return-Path", "Sender")}
    return {a for a in own if a}


def _returned_recipients(parts: _Parts, returned_text: str) -> list[str]:
    """Return the To addresses of the returned original message."""
    returned = list(parts.returned) + [email.message_from_string(h, policy=email.policy.compat32) for h in parts.returned_headers]
    if returned_text:
        returned.append(email.message_from_string(returned_text.lstrip(), policy=email.policy.compat32))
    found = [_address(a) for inner in returned for a in _header(inner, "To").split(",")]
    return list(dict.fromkeys(a for a in found if a))


def _flufl_failures(msg: email.message.Message) -> list[_Failure]:
    """Ask flufl.bounce's detectors for failed addresses when our own reading found none."""
    from flufl.bounce import all_failures

    try:
        permanent, temporary = all_failures(msg)
    except Exception:
        return []
    # Only the addresses are taken from flufl.bounce; the cause is read from the text like any other.
    found = sorted(permanent) + sorted(temporary - permanent)
    return [_Failure(a.decode("utf-8", "replace").lower(), "", "", "") for a in found]
