"""The email plugin's tests use the fixtures Sequencer ships for plugin authors (docs/plugins.md)."""
pytest_plugins = ["sequencer.testing"]
