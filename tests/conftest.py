"""The core's tests use Sequencer's own pytest plugin (sequencer/testing), as a plugin's tests do."""
import pytest

pytest_plugins = ["sequencer.testing"]


@pytest.fixture(autouse=True)
def only_the_email_plugin(monkeypatch: pytest.MonkeyPatch) -> None:
    """Load only the email plugin of those installed: the core's tests register their own sms and voice
    channels, which an installed channel plugin of the same name would clash with; each plugin's tests
    (plugins/NAME/tests) exercise that plugin."""
    monkeypatch.setenv("SEQUENCER_LOAD_PLUGINS", "email")
