"""The voice plugin's tests: Sequencer's fixtures for plugin authors, the fake Twilio, [plugins.voice] pointed at it."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from sequencer.web import create_app
from voice_support import GREETING, NOTICE, POOL

pytest_plugins = ["sequencer.testing", "sequencer.testing.twilio"]


@pytest.fixture
def voice_settings() -> dict[str, object]:
    """Settings a test may change before the config is written (on_human, record...)."""
    return {"record": False, "on_human": "callback_task", "calls_per_second": 1000}


@pytest.fixture
def config_path(config_path: Path, fake_twilio, voice_settings: dict[str, object]) -> Path:
    """The test config plus [plugins.voice] for the fake Twilio; a fast call rate so tests do not wait."""
    with config_path.open("a", encoding="utf-8") as config:
        config.write(f"""
[plugins.voice]
account_sid = "{fake_twilio.account_sid}"
auth_token = "{fake_twilio.auth_token}"
numbers = {json.dumps(list(POOL))}
api_base_url = "{fake_twilio.url}"
calls_per_second = {voice_settings["calls_per_second"]}
record = {json.dumps(voice_settings["record"])}
record_notice = "{NOTICE}"
human_greeting = "{GREETING}"
on_human = "{voice_settings["on_human"]}"
languages = {{ RU = "ru-RU" }}
""")
    return config_path


@pytest.fixture
def client(runtime):
    return create_app(runtime, test_config={"TESTING": True}).test_client(use_cookies=False)
