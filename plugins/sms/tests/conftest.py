"""The SMS plugin's tests: Sequencer's fixtures for plugin authors, a fake Twilio, [plugins.sms] pointed at it."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from sms_support import HELP_TEXT, POOL

pytest_plugins = ["sequencer.testing", "sequencer.testing.twilio"]


@pytest.fixture
def config_path(config_path: Path, fake_twilio) -> Path:
    """The test config plus [plugins.sms] for the fake Twilio; a fast per-number rate so tests do not wait."""
    with config_path.open("a", encoding="utf-8") as config:
        config.write(f"""
[plugins.sms]
account_sid = "{fake_twilio.account_sid}"
auth_token = "{fake_twilio.auth_token}"
numbers = {json.dumps(list(POOL))}
api_base_url = "{fake_twilio.url}"
per_number_per_second = 1000
help_text = "{HELP_TEXT}"
""")
    return config_path
