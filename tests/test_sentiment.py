"""Tests for sequencer/sentiment.py: one set of rules for a person's words on any channel."""
from __future__ import annotations

import pytest

from sequencer.channels import asks_to_opt_out, reply_sentiment


@pytest.mark.parametrize(
    ("text", "sentiment"),
    [
        ("Sure, call me tomorrow.", "positive"),
        ("We are not interested.", "negative"),
        ("Нам это не интересно.", "negative"),
        ("Давайте обсудим на следующей неделе.", "positive"),
        ("Can you resend the file?", "neutral"),
        ("Please take me off your mailing list", "negative"),
    ],
)
def test_sentiment_rules(text: str, sentiment: str) -> None:
    assert reply_sentiment(text) == sentiment


@pytest.mark.parametrize("text", [
    # Written to an email, a text or a call note alike: one rule set serves every channel.
    "Please unsubscribe me", "opt me out", "remove my number", "remove my address please", "take me off",
    "no more texts", "no more emails", "stop calling", "stop emailing me", "don't call me again",
    "do not text this number", "don't email me", "please, off your mailing list", "отпишите меня",
    "удалите мой номер", "исключите нас из рассылки", "больше не пишите", "хватит мне звонить",
])
def test_opt_out_wording_of_every_channel(text: str) -> None:
    assert asks_to_opt_out(text)


@pytest.mark.parametrize("text", [
    "Stop by our booth on Tuesday", "Call me tomorrow", "Can you email me the deck?", "Удалите старую версию файла",
])
def test_ordinary_words_are_not_an_opt_out(text: str) -> None:
    assert not asks_to_opt_out(text)
