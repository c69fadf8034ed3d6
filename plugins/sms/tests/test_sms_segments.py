"""Segments as Twilio counts them: GSM-7 with its extension table, UCS-2 in UTF-16 units, split boundaries."""
from __future__ import annotations

import pytest

from sequencer_sms.segments import GSM7_BASIC, GSM7_EXTENSION, count


@pytest.mark.parametrize("text, encoding, units, segments", [
    ("", "GSM-7", 0, 0),
    ("a" * 160, "GSM-7", 160, 1),
    ("a" * 161, "GSM-7", 161, 2),
    ("a" * 306, "GSM-7", 306, 2),          # 153 * 2
    ("a" * 307, "GSM-7", 307, 3),
    ("€" * 80, "GSM-7", 160, 1),           # extension characters count two septets
    ("€" * 81, "GSM-7", 162, 2),
    ("a" * 159 + "[", "GSM-7", 161, 2),
    # 152 septets, then an escape pair that does not fit in the 153rd: it starts part two.
    ("a" * 152 + "{" + "a" * 151, "GSM-7", 305, 2),
    ("a" * 152 + "{" + "a" * 152, "GSM-7", 306, 3),   # 306 plain septets would be 2
    ("Привет" * 11 + "Прив", "UCS-2", 70, 1),  # Cyrillic makes the whole text UCS-2
    ("Привет" * 11 + "Приве", "UCS-2", 71, 2),
    ("я" * 134, "UCS-2", 134, 2),          # 67 * 2
    ("я" * 135, "UCS-2", 135, 3),
    ("😀" * 35, "UCS-2", 70, 1),           # an emoji is a surrogate pair: two UTF-16 units
    ("😀" * 36, "UCS-2", 72, 2),
    # 66 units, then an emoji that would split across parts: it moves whole to part two.
    ("a" * 66 + "😀" + "a" * 65, "UCS-2", 133, 2),
    ("a" * 66 + "😀" + "a" * 66, "UCS-2", 134, 3),    # 134 units of Cyrillic would be 2
    ("a" * 159 + "é", "GSM-7", 160, 1),    # é is in the GSM-7 basic set
    ("a" * 159 + "á", "UCS-2", 160, 3),    # á is not: 160 UTF-16 units, 67 a part
])
def test_counts_as_twilio_does(text: str, encoding: str, units: int, segments: int) -> None:
    counted = count(text)
    assert (counted.encoding, counted.units, counted.count) == (encoding, units, segments)


def test_alphabets_are_the_3gpp_tables() -> None:
    # TS 23.038: 128 codes, of which 0x1B is the escape; the extension table has these ten.
    assert len(GSM7_BASIC) == 127 and "\x1b" not in GSM7_BASIC
    assert GSM7_EXTENSION == set("\f^{}\\[~]|€")
    assert not GSM7_BASIC & GSM7_EXTENSION
