"""Whose side an SMTP refusal during the session is on: ours (the sending mailbox) or the recipient's.

A server that refuses us because of our IP, our domain's authentication, our login, our
sending rate or our content will refuse every lead the same way: the mailbox must be held
and an admin told, and the lead must not be blamed. The rules are read from the formats
(RFC 5321 reply codes, RFC 3463 enhanced status codes and the codes registered after it,
RFC 4954 AUTH replies, Postfix's documented restriction prefixes) and then the wording
the common mail systems use, with sisimai's reason list as the reference for which words
mean which cause. docs/deliverability.md, "Refusals during the SMTP session", lists every
rule with its source; keep the two in step.
"""
from __future__ import annotations

import re

from sequencer_email.transport import enhanced_status

# Which command the server refused; "greeting", "EHLO", "STARTTLS" and "AUTH" happen before
# any message, so a refusal there is about the session, never about one recipient.
SESSION_STAGES = frozenset({"greeting", "EHLO", "STARTTLS", "AUTH"})

# Wording of a temporary fault on the server's own side, read first because some of these
# carry an X.7.x code all the same: greylisting (RFC 6647) defers every new sender once;
# RFC 4954 section 6 "454 4.7.0 Temporary authentication failure" is the server's backend;
# Gmail documents "4.7.0 Temporary System Problem".
_THEIR_TEMPORARY_FAULT = re.compile(
    r"greylist|graylist|temporary authentication failure|temporary system problem|temporary server failure",
    re.I,
)

# Wording that names our side, by cause (sisimai reasons: blocked, authfailure, requireptr,
# badreputation, speeding, toomanyconn, spamdetected, norelaying, rejected, securityerror).
_SENDER_PATTERNS = (
    # DNS blocklists and their operators: "Client host [192.0.2.1] blocked using zen.spamhaus.org".
    ("blocklist", r"blocked using|spamhaus|spamcop|barracuda|sorbs|\bdnsbl\b|\brbl\b|black ?list|block ?list"
                  r"|\b(ip|address|host|domain|server)\b[^.;]{0,60}(?<!not )\blisted (at|on|in|by)\b"
                  r"|banned sending ip|banned sender"),
    # SPF (RFC 7208), DKIM (RFC 6376), DMARC (RFC 7489), SMTP AUTH (RFC 4954).
    ("authentication", r"\bspf\b|\bdkim\b|\bdmarc\b|sender policy framework|unauthenticated|not authenticated"
                       r"|authentication (is )?required|authentication (failed|failure|unsuccessful)"
                       r"|(invalid|bad|incorrect) (login|credentials|username|password)|credentials invalid"),
    ("reverse_dns", r"reverse (dns|lookup|hostname)|\bptr\b|\brdns\b|cannot find your hostname"
                    r"|ip name lookup failed"),
    ("reputation", r"reputation"),
    ("rate_limit", r"rate[- ]?limit|sending rate|unusual rate|too many (connections|messages|mails|emails|recipients"
                   r"|concurrent|sessions)|connection limit|(sending|message) (volume|quota) exceeded|throttl"),
    ("spam", r"\bspam\b|unsolicited|junk mail|bulk mail"),
    ("relay", r"relay(ing)? (access )?(denied|not permitted|prohibited)|unable to relay|not permitted to relay"
              r"|we do not relay"),
    # Postfix prefixes its restriction replies with what matched (postconf(5),
    # smtpd_client/helo/sender_restrictions): the client, the HELO name or the envelope sender are all us.
    ("sender_rejected", r"client host rejected|helo command rejected|sender address rejected|sender rejected"
                        r"|sender (denied|blocked|not allowed)"),
    ("tls", r"must issue a starttls|starttls (is )?required|tls (is )?required|encryption (is )?required"),
)
_SENDER_WORDING = tuple((cause, re.compile(pattern, re.I)) for cause, pattern in _SENDER_PATTERNS)

# Wording of a refusal by the recipient's own filter or settings (sisimai "filtered";
# Postfix's "Recipient address rejected" prefix names the recipient restriction that matched;
# Exchange RESOLVER.RST.* is the recipient's delivery restriction). Not a reason to hold the mailbox.
_RECIPIENT_WORDING = re.compile(
    r"recipient address rejected|rejected by (the )?recipient|blocked by the recipient|refused by (the )?recipient"
    r"|recipient (preferences|refuses|does not accept|is not accepting)|user refuses|user reject"
    r"|resolver\.rst\.|is not accepting any mail|only accepting mail from",
    re.I,
)

# RFC 3463 subject 7 "Security or Policy Status" details that are about the recipient, not us:
# 7.2 mailing list expansion prohibited; RFC 7293 (REQUIRE-RECIPIENT-VALID-SINCE) 7.17 mailbox
# owner has changed, 7.18 domain owner has changed, 7.19 RRVS test cannot be completed.
_RECIPIENT_SECURITY_DETAILS = frozenset({2, 17, 18, 19})

# RFC 3463 3.2: X.1.7 bad sender's mailbox address syntax, X.1.8 bad sender's system address.
_SENDER_ADDRESS_DETAILS = frozenset({7, 8})
# What each cause means, for the error a person reads.
CAUSES = {
    "blocklist": "the sending IP or domain is on a blocklist",
    "authentication": "authentication failed (SMTP login, or SPF, DKIM or DMARC of the sending domain)",
    "reverse_dns": "the sending IP has no matching reverse DNS (PTR) name",
    "reputation": "the sending IP or domain has a poor reputation",
    "rate_limit": "the server limits our sending rate or connections",
    "spam": "the server judged our mail to be spam",
    "relay": "the SMTP server will not relay mail from this mailbox",
    "sender_rejected": "the server refuses our client, HELO name or envelope sender",
    "tls": "the server requires encryption",
    "policy": "refused by a security or policy rule (RFC 3463 X.7.x) that applies to the sender",
}
_CODE_CAUSES = {
    # RFC 4954 section 6: 530 authentication required, 534 mechanism too weak,
    # 535 credentials invalid, 538 encryption required for the mechanism.
    530: "authentication", 534: "authentication", 535: "authentication", 538: "authentication",
}


def sender_cause(stage: str, code: int | None, reply: str) -> str | None:
    """Return why a refusal is our side's fault ("blocklist", "authentication", "rate_limit"...), or None.

    stage is the refused command: greeting, EHLO, STARTTLS, AUTH, MAIL, RCPT, DATA or
    message (the reply to the message data). None means the refusal is about the recipient
    or a passing fault of the server, and is handled as before (retry, or invalid address).
    """
    if code is None or not 400 <= code < 600:
        return None
    if _THEIR_TEMPORARY_FAULT.search(reply) or (stage == "AUTH" and code == 454):
        return None
    for cause, pattern in _SENDER_WORDING:
        if pattern.search(reply):
            return cause
    if stage not in SESSION_STAGES and _RECIPIENT_WORDING.search(reply):
        return None
    if code in _CODE_CAUSES:
        return _CODE_CAUSES[code]
    status = enhanced_status(reply)
    if status is not None:
        _class, subject, detail = (int(part) for part in status.split("."))
        if subject == 1 and detail in _SENDER_ADDRESS_DETAILS:
            return "sender_rejected"
        # A bare 4.7.x to one recipient while the others of the session go through is how
        # greylisting answers without saying so (e.g. "451 4.7.1 Please try again later"):
        # retried. A permanent X.7.x, or any at a session step, is about us.
        if subject == 7 and detail not in _RECIPIENT_SECURITY_DETAILS and (code >= 500 or stage in SESSION_STAGES
                                                                             or code == 421):
            return "policy"
    if code >= 500 and stage in ("greeting", "EHLO", "AUTH", "MAIL"):
        # RFC 5321 3.1: 554 in place of the greeting means "no service for you"; a permanent
        # refusal of EHLO or of MAIL FROM can only be about the client or the envelope sender.
        return "sender_rejected"
    return None
