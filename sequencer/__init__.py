"""Sequencer: an open-source outreach sequencer."""
import pluggy

__version__ = "0.1.0"

hookimpl = pluggy.HookimplMarker("sequencer")
