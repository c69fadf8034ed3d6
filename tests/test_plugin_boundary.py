"""The phone plugins reach the core only through the plugin contract."""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

from sequencer.channels import Core
from sequencer.receiving import PluginCore

ROOT = Path(__file__).resolve().parents[1]
CONTRACT = {"sequencer", "sequencer.channels"}


@pytest.mark.parametrize("package", ["plugins/sms/sequencer_sms", "plugins/voice/sequencer_voice"])
def test_a_phone_plugin_imports_only_the_contract(package: str) -> None:
    reached = set()
    for path in sorted((ROOT / package).glob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "sequencer":
                names = {a.name for a in node.names}
                reached.add((node.module, frozenset(names) if node.module == "sequencer" else frozenset()))
            elif isinstance(node, ast.Import):
                reached |= {(a.name, frozenset()) for a in node.names if a.name.split(".")[0] == "sequencer"}
            elif isinstance(node, ast.Attribute) and node.attr == "_runtime":
                pytest.fail(f"{path.name}:{node.lineno} reads the core's private _runtime")
    assert {module for module, _ in reached} <= CONTRACT
    assert all(names <= {"hookimpl"} for module, names in reached if module == "sequencer")


def test_plugin_core_implements_every_core_method() -> None:
    declared = {name for name in vars(Core) if not name.startswith("_")} | set(Core.__annotations__)
    missing = {name for name in declared if not hasattr(PluginCore, name)}
    assert not missing
    for name in ("sender_number", "number_slot", "is_our_number", "base_url", "call_task", "contact_opening",
                 "account_slot"):
        assert name in declared
