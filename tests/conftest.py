"""The core's tests use Sequencer's own pytest plugin (sequencer/testing), as a plugin's tests do."""
pytest_plugins = ["sequencer.testing"]
