"""Plugins: discovery, enable/disable, and every hook exercised through a throwaway plugin."""
from __future__ import annotations

import inspect
import json
from pathlib import Path

import click
import flask
import pytest
import sqlalchemy as sa

from sequencer import cadences, hookimpl, hookspecs
from sequencer.channels import Channel, OutboundTouch, SendResult
from sequencer.engine import Engine
from sequencer.models import Enrollment, InboundEvent, Lead
from sequencer.plugins import Plugins
from tests.support.world import REP, enroll_csv, team

REPO = Path(__file__).resolve().parents[1]
HOOKS = sorted(name for name, fn in inspect.getmembers(hookspecs, inspect.isfunction)
               if hasattr(fn, "sequencer_spec"))


class Pigeon(Channel):
    """A channel that delivers everything instantly."""

    name = "pigeon"

    def send_batch(self, touches: list[OutboundTouch]) -> list[SendResult]:
        return [SendResult(t.touch_id, accepted=True, provider_id=f"coo-{t.touch_id}") for t in touches]


class Recorder:
    """A throwaway plugin that answers or records every hook."""

    def __init__(self) -> None:
        self.calls: dict[str, list] = {}

    @hookimpl
    def register_channels(self, register) -> None:  # noqa: ANN001
        register(Pigeon())

    def _note(self, name: str, value) -> None:  # noqa: ANN001
        self.calls.setdefault(name, []).append(value)

    @hookimpl
    def register_commands(self, cli: click.Group) -> None:
        @cli.command("hello-plugin")
        def hello() -> None:
            click.echo("hello from a plugin")

    @hookimpl
    def register_blueprints(self, app: flask.Flask) -> None:
        bp = flask.Blueprint("recorder", __name__)
        bp.add_url_rule("/hooks/recorder/ping", "ping", lambda: "pong")
        app.register_blueprint(bp)

    @hookimpl
    def prepare_template_env(self, env) -> None:  # noqa: ANN001
        env.filters["shout"] = lambda text: str(text).upper() + "!"

    @hookimpl
    def lead_context(self, lead: Lead) -> dict:
        return {"crm_score": len(lead.email or "")}

    @hookimpl
    def classify_reply(self, text: str) -> str | None:
        return "positive" if "pineapple" in text else None

    @hookimpl
    def touch_sent(self, touch) -> None:  # noqa: ANN001
        self._note("touch_sent", touch)

    @hookimpl
    def inbound_received(self, event: InboundEvent) -> None:
        self._note("inbound_received", event.kind)

    @hookimpl
    def enrollment_exited(self, enrollment: Enrollment, reason: str) -> None:
        self._note("enrollment_exited", (enrollment.id, reason))


@pytest.fixture
def recorder(runtime):
    plugin = Recorder()
    runtime.plugins.add_plugin(plugin, "recorder")
    yield plugin
    runtime.plugins.remove_plugin("recorder")


def test_every_hook_is_documented() -> None:
    docs = (REPO / "docs" / "plugins.md").read_text(encoding="utf-8")
    assert [h for h in HOOKS if f"### {h}(" not in docs] == []


def test_every_hook_is_exercised_here() -> None:
    assert [h for h in HOOKS if not hasattr(Recorder, h)] == []


def test_registered_channel_is_configured_and_listed(runtime, recorder) -> None:
    pigeon = runtime.plugins.channel("pigeon")
    assert isinstance(pigeon, Pigeon) and pigeon.context.base_url == "https://sequencer.test"
    assert runtime.plugins.channel_plugin("pigeon") == "recorder"
    with runtime.session() as session:
        info = {i.name: i for i in runtime.plugins.info(session)}
        assert runtime.plugins.channel_status(session)["pigeon"] is None
    assert info["recorder"].channels == ("pigeon",) and info["recorder"].enabled


def test_email_plugin_is_discovered_through_its_entry_point(cli) -> None:
    [email] = json.loads(cli("plugins", "list", "--format", "json").output)
    assert (email["name"], email["channels"], email["enabled"], email["health"]) == ("email", ["email"], True, "ok")
    assert email["version"] == "0.1.0"


def test_enable_disable_persist_and_unknown_plugin_is_named(cli, runtime) -> None:
    cli("plugins", "disable", "email")
    with runtime.session() as session:
        assert runtime.plugins.channel_status(session)["email"].startswith("plugin email is disabled")
    cli("plugins", "enable", "email")
    with runtime.session() as session:
        assert runtime.plugins.channel_status(session)["email"] is None
    result = cli("plugins", "enable", "fax", expect=1)
    assert "no plugin named 'fax' is installed (installed: email)" in result.output


def test_load_filter_env_limits_plugins(settings, monkeypatch) -> None:
    monkeypatch.setenv("SEQUENCER_LOAD_PLUGINS", "sms")
    assert Plugins(settings).names() == []


def test_command_and_blueprint_hooks(runtime, recorder) -> None:
    group = click.Group("sequencer")
    runtime.plugins.hook.register_commands(cli=group)
    assert "hello-plugin" in group.commands
    from sequencer.web import create_app

    assert create_app(runtime).test_client().get("/hooks/recorder/ping").data == b"pong"


def test_template_and_event_hooks(cli, runtime, recorder, tmp_path, smtp_sink) -> None:
    team(cli, name="")
    cadence = tmp_path / "c.toml"
    cadence.write_text('name = "hooks"\n[schedule]\ndays = ["mon","tue","wed","thu","fri","sat","sun"]\n'
                       'start = "00:00"\nend = "24:00"\n[[steps]]\nkey = "one"\nchannel = "email"\n'
                       'subject = "{{ lead.first_name | shout }}"\nbody = "score {{ crm_score }}"\n')
    # The filter exists only in this runtime's plugins, so apply through it rather than a new CLI process.
    with runtime.session() as session:
        cadences.apply_cadence(session, cadences.parse_cadence(cadence.read_text(), str(cadence)),
                               now=runtime.now(), renderer=runtime.renderer)
    enroll_csv(cli, tmp_path, [f"ann@x.example,ann,{REP},UTC"], "hooks", runtime.now(),
               header="email,first_name,owner,timezone")
    Engine(runtime).run_until_idle()
    [message] = smtp_sink.messages()
    assert message["Subject"] == "ANN!"
    assert "score 13" in message.get_body(("plain",)).get_content()
    assert [t.step_key for t in recorder.calls["touch_sent"]] == ["one"]
    with runtime.session() as session:
        enrollment_id = session.scalar(sa.select(Enrollment.id))
    assert recorder.calls["enrollment_exited"] == [(enrollment_id, "completed")]

    reply = (f"From: ann@x.example\r\nTo: rep@acme.example\r\nSubject: Re: ANN!\r\n"
             f"In-Reply-To: {message['Message-ID']}\r\n\r\nI love pineapple, let's talk.\r\n").encode()
    from sequencer.inbound import handle_email

    with runtime.session() as session:
        handle_email(session, reply, now=runtime.now(), plugins=runtime.plugins)
    assert recorder.calls["inbound_received"] == ["reply"]
    with runtime.session() as session:
        event = session.scalar(sa.select(InboundEvent))
    assert event.classification["sentiment"] == "positive"


def test_builtin_reply_classifier_answers_when_no_plugin_does(runtime) -> None:
    assert runtime.plugins.hook.classify_reply(text="Not interested, please stop.") == "negative"
