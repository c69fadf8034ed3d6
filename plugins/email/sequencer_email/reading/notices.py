"""Recognising a mail system's notice (RFC 5321 §4.5.5 null sender, MAILER-DAEMON, delivery subjects)."""
from __future__ import annotations

import email
import email.message
import re

from sequencer_email.reading.decoding import _header
from sequencer_email.reading.reports import _Parts


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
