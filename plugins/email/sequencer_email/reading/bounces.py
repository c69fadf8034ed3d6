"""Bounce causes: each failed recipient's reason, from the diagnostic text first and the RFC 3463
status code second, in sisimai's vocabulary, and the cause that reason means for us."""
from __future__ import annotations

import email
import email.message
import email.policy
import json
import re

from sequencer_email.reading.decoding import _address, _ADDRESS_RE, _header
from sequencer_email.reading.readings import AddressReading
from sequencer_email.reading.reports import _DSN_FIELD_RE, _Failure, _field_blocks, _Parts, _squash


# Reason -> cause.  Derived from shared/data/bounces/expected.json, where every
# sisimai reason maps to exactly one category; only the first group suppresses.
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


# Diagnostic text patterns per reason, tried in this order: the more specific
# verdicts come before the generic ones they contain ("over quota" mentions no
# user, "blocked ... spamhaus" mentions spam, "user unknown" is a catch-all).
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
