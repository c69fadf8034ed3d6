"""SMS segments counted as Twilio counts them (3GPP TS 23.038 alphabets, TS 23.040 concatenation).

A text made only of GSM-7 characters is sent in 7-bit septets: 160 in one segment, 153 per
segment once split (7 septets go to the concatenation header). The extension table's characters
are an escape plus a septet, so they count two and a split never separates the pair. Any other
character makes the whole text UCS-2 (UTF-16 on the wire): 70 code units in one segment, 67 per
segment once split, a character outside the Basic Multilingual Plane (most emoji) counting two
units whose surrogate pair is never split.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

# TS 23.038 section 6.2.1, the default alphabet, without the escape (0x1B) that opens the extension table.
GSM7_BASIC = frozenset(
    "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?"
    "¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà"
)
# TS 23.038 section 6.2.1.1, the default extension table: escape + one septet each.
GSM7_EXTENSION = frozenset("\f^{}\\[~]|€")

GSM7_SINGLE, GSM7_PART = 160, 153
UCS2_SINGLE, UCS2_PART = 70, 67


@dataclass(frozen=True)
class Segments:
    encoding: Literal["GSM-7", "UCS-2"]
    #: Septets (GSM-7) or UTF-16 code units (UCS-2) in the whole text.
    units: int
    count: int


def count(text: str) -> Segments:
    """Return the encoding Twilio sends `text` in and how many segments it is billed as."""
    if all(ch in GSM7_BASIC or ch in GSM7_EXTENSION for ch in text):
        return _pack("GSM-7", [2 if ch in GSM7_EXTENSION else 1 for ch in text], GSM7_SINGLE, GSM7_PART)
    return _pack("UCS-2", [2 if ord(ch) > 0xFFFF else 1 for ch in text], UCS2_SINGLE, UCS2_PART)


def _pack(encoding: Literal["GSM-7", "UCS-2"], sizes: list[int], single: int, part: int) -> Segments:
    """Fill segments of `part` units with characters of the given sizes, never splitting a character."""
    units = sum(sizes)
    if units <= single:
        return Segments(encoding, units, 1 if units else 0)
    segments, used = 1, 0
    for size in sizes:
        if used + size > part:
            segments, used = segments + 1, 0
        used += size
    return Segments(encoding, units, segments)
