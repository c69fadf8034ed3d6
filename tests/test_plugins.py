"""Plugins: discovery, enable/disable, and every hook exercised through a throwaway plugin."""
from __future__ import annotations

import inspect
import json
from pathlib import Path

import click
import flask
import pytest
import sqlalchemy as sa
from click.testing import CliRunner

from sequencer import cadences, hookimpl, hookspecs
from sequencer.channels import Channel, Health, OutboundTouch, SendResult, core_for
from sequencer.engine import Engine
from sequencer.models import Enrollment, InboundEvent, Lead
from sequencer.plugins import PluginError, Plugins
from sequencer.worker import run_plugin_job
from tests.support.channels import FakeSms
from sequencer.testing.world import REP, enroll_csv, team

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
    def register_jobs(self, register) -> None:  # noqa: ANN001
        register("tally", lambda core: self._note("job", core), 30)

    @hookimpl
    def register_commands(self, cli: click.Group) -> None:
        @cli.command("hello-plugin")
        def hello() -> None:
            # What a command needs from the core, without importing its internals.
            core = core_for("recorder")
            click.echo(f"hello from a plugin at {core.now().isoformat()}, greeting {core.settings['greeting']}")

    @hookimpl
    def register_blueprints(self, app: flask.Flask) -> None:
        bp = flask.Blueprint("recorder", __name__)
        bp.add_url_rule("/hooks/recorder/ping", "ping", lambda: f"pong {core_for('recorder').now().isoformat()}")
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
    def check_inbound(self, sender, timeout: float):  # noqa: ANN001, ANN201
        self._note("check_inbound", sender.address)
        return Health(ok=True, detail="read by the recorder") if sender.settings.get("recorder") else None

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
    monkeypatch.setenv("SEQUENCER_LOAD_PLUGINS", "fax")
    assert Plugins(settings).names() == []


def test_command_and_blueprint_hooks_reach_the_core(runtime, recorder, config_path) -> None:
    from sequencer.cli import main
    from sequencer.web import create_app

    runtime.settings.plugins["recorder"] = {"greeting": "hi"}
    config_path.write_text(config_path.read_text() + '\n[plugins.recorder]\ngreeting = "hi"\n', encoding="utf-8")
    group = click.Group("sequencer", commands=main.commands, params=main.params, callback=main.callback)
    runtime.plugins.hook.register_commands(cli=group)
    result = CliRunner().invoke(group, ["--config", str(config_path), "--now", "2026-05-01T09:00:00Z",
                                        "hello-plugin"], catch_exceptions=False)
    assert result.output == "hello from a plugin at 2026-05-01T09:00:00+00:00, greeting hi\n"
    assert create_app(runtime).test_client().get("/hooks/recorder/ping").data == b"pong 2026-03-02T14:00:00+00:00"


def test_core_for_outside_a_command_or_request_says_where_it_works() -> None:
    with pytest.raises(RuntimeError, match="plugin recorder asked for its core outside a command or web request"):
        core_for("recorder")


def test_jobs_run_with_the_plugin_core_unless_the_plugin_is_disabled(runtime, recorder) -> None:
    [job] = [j for j in runtime.plugins.jobs() if j.plugin == "recorder"]
    assert (job.id, job.interval_seconds) == ("plugin:recorder:tally", 30)
    run_plugin_job(runtime, job)
    assert recorder.calls["job"] == [runtime.plugins.core("recorder")]
    with runtime.session() as session:
        runtime.plugins.set_enabled(session, "recorder", False, runtime.now())
    run_plugin_job(runtime, job)
    assert len(recorder.calls["job"]) == 1


@pytest.mark.parametrize(("interval", "problem"), [(0, "every 0 seconds; the interval must be a positive"),
                                                   ("60", "every '60' seconds")])
def test_a_bad_job_is_refused_naming_it(runtime, interval, problem) -> None:
    class BadJob:
        @hookimpl
        def register_jobs(self, register) -> None:  # noqa: ANN001
            register("sync", print, interval)

    runtime.plugins.add_plugin(BadJob(), "badjob")
    with pytest.raises(PluginError, match=f"plugin badjob registered job 'sync' {problem}"):
        runtime.plugins.jobs()


def test_builtin_declares_manual_only_sms_voice_and_task(runtime) -> None:
    sms, voice, task = (runtime.plugins.channel(n) for n in ("sms", "voice", "task"))
    assert not (sms.automatic or voice.automatic or task.automatic)
    assert (sms.address_kind, sms.task_kind, sms.requires_consent, sms.contact_hours) == ("phone", "sms", "all", True)
    assert (voice.task_kind, voice.task_verb, voice.requires_consent) == ("call", "Call", "automatic")
    assert (task.address_kind, task.task_kind, task.sender_kind) == (None, "task", None)
    with runtime.session() as session:
        status = runtime.plugins.channel_status(session)
    # Manual steps need nothing more; an automatic text waits, and the reason says what to do.
    assert status["sms"].startswith("no installed plugin sends sms by itself; install one, or make the step manual")


class Texter:
    def __init__(self, channel: Channel) -> None:
        self.channel = channel

    @hookimpl
    def register_channels(self, register) -> None:  # noqa: ANN001
        register(self.channel)


def test_a_plugin_channel_replaces_the_builtin_declaration(runtime) -> None:
    runtime.plugins.add_plugin(Texter(FakeSms()), "texter")
    assert isinstance(runtime.plugins.channel("sms"), FakeSms)
    assert runtime.plugins.channel_plugin("sms") == "texter"
    with runtime.session() as session:
        assert runtime.plugins.channel_status(session)["sms"] is None
    runtime.plugins.remove_plugin("texter")
    assert runtime.plugins.channel_plugin("sms") == "sequencer.builtin"


def test_a_second_plugin_for_one_channel_is_refused_naming_both(runtime) -> None:
    runtime.plugins.add_plugin(Texter(FakeSms()), "texter")
    with pytest.raises(PluginError, match="channel 'sms' is registered by both plugins texter and other"):
        runtime.plugins.add_plugin(Texter(FakeSms()), "other")
    # The refused plugin left nothing behind.
    assert runtime.plugins.channel_plugin("sms") == "texter" and "other" not in runtime.plugins.names()


@pytest.mark.parametrize(("loosened", "problem"), [
    ({"requires_consent": "automatic"}, "declares requires_consent = 'automatic', looser than the built-in 'all'"),
    ({"contact_hours": False}, "declares contact_hours = False, but texts and calls keep to"),
    ({"address_kind": "email"}, "declares address_kind = 'email', but steps on 'sms' go to the lead's phone"),
])
def test_a_replacement_that_loosens_compliance_is_refused(runtime, loosened, problem) -> None:
    loose = type("LooseSms", (FakeSms,), loosened)
    with pytest.raises(PluginError, match=f"plugin loose: channel 'sms' {problem}"):
        runtime.plugins.add_plugin(Texter(loose()), "loose")


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

    # A reply reported through the contract, as any channel plugin reports one.
    runtime.plugins.core("recorder").inbound_message("email", "ann@x.example", "rep@acme.example",
                                                     "I love pineapple, let's talk.", "<r1@x.example>", runtime.now(),
                                                     references=[message["Message-ID"]])
    assert recorder.calls["inbound_received"] == ["reply"]
    with runtime.session() as session:
        event = session.scalar(sa.select(InboundEvent))
    assert event.classification["sentiment"] == "positive"


def test_builtin_reply_classifier_answers_when_no_plugin_does(runtime) -> None:
    assert runtime.plugins.hook.classify_reply(text="Not interested, please stop.") == "negative"
