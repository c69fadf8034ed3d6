"""config.toml -> Settings: required keys, unknown keys, secrets from the environment, overrides; clocks."""
from __future__ import annotations

from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from sequencer.clock import FixedClock, OffsetClock, iso_z, parse_instant
from sequencer.config import ConfigError, ConfigWarning, check_secret_for_serving, is_this_machine, load_settings

REPO = Path(__file__).resolve().parents[1]

MINIMAL = """
[database]
url = "sqlite:///var/test.db"
[web]
base_url = "https://sales.example.com"
secret_key = "s3cret"
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "config.toml"
    path.write_text(text, encoding="utf-8")
    return path


def test_minimal_config_gets_defaults_and_a_sqlite_path_beside_the_file(tmp_path: Path) -> None:
    settings = load_settings(write(tmp_path, MINIMAL))
    assert settings.database.url == f"sqlite:///{tmp_path / 'var' / 'test.db'}"
    assert (tmp_path / "var").is_dir()
    assert settings.sending.postal_address is None
    assert "meeting_booked" in settings.tasks.outcomes
    assert settings.templates_dir == tmp_path / "templates"


@pytest.mark.parametrize("missing, key", [("url", "database.url"), ("base_url", "web.base_url")])
def test_missing_required_key_names_the_key_and_the_file(tmp_path: Path, missing: str, key: str) -> None:
    path = write(tmp_path, "\n".join(line for line in MINIMAL.splitlines() if not line.startswith(missing)))
    with pytest.raises(ConfigError) as error:
        load_settings(path)
    assert str(path) in str(error.value) and key in str(error.value)


def test_unknown_keys_are_warned_about(tmp_path: Path) -> None:
    path = write(tmp_path, MINIMAL + '[sending]\npostal_adress = "typo"\n[colour]\nx = 1\n')
    with pytest.warns(ConfigWarning) as caught:
        load_settings(path)
    messages = [str(w.message) for w in caught]
    assert any("sending.postal_adress" in m for m in messages) and any("[colour]" in m for m in messages)


def test_secrets_come_from_the_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = write(tmp_path, MINIMAL.replace('"s3cret"', '{ env = "TEST_SEQ_SECRET" }')
                 + '[plugins.email]\npassword = { env = "TEST_SMTP_PASSWORD" }\n')
    monkeypatch.setenv("TEST_SEQ_SECRET", "from-env")
    monkeypatch.setenv("TEST_SMTP_PASSWORD", "hunter2")
    settings = load_settings(path)
    assert settings.web.secret_key == "from-env"
    assert settings.plugin("email")["password"] == "hunter2"
    monkeypatch.delenv("TEST_SMTP_PASSWORD")
    with pytest.raises(ConfigError, match="plugins.email.password reads the environment variable "
                                          "TEST_SMTP_PASSWORD, which is not set"):
        load_settings(path)


def test_environment_selects_the_file_and_overrides_the_database(tmp_path: Path,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SEQUENCER_CONFIG", str(write(tmp_path, MINIMAL)))
    monkeypatch.setenv("SEQUENCER_DATABASE_URL", "postgresql+psycopg://db.internal/sequencer")
    assert load_settings().database.url == "postgresql+psycopg://db.internal/sequencer"


def test_bad_files_are_explained(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no such config file"):
        load_settings(tmp_path / "nope.toml")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_settings(write(tmp_path, "[database\n"))


def test_shipped_configs_load(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SEQUENCER_SECRET_KEY", "x" * 32)
    production = load_settings(REPO / "config.toml")
    assert production.sending.postal_address is None  # email refuses to send until it is set
    demo = load_settings(REPO / "demo" / "config.toml")
    assert demo.sending.postal_address.startswith("DEMO ONLY")


def test_cli_reports_a_missing_key_without_a_traceback(tmp_path: Path) -> None:
    from click.testing import CliRunner

    from sequencer.cli import main

    path = write(tmp_path, MINIMAL.replace('base_url = "https://sales.example.com"', ""))
    result = CliRunner().invoke(main, ["--config", str(path), "plugins", "list"])
    assert result.exit_code == 1
    assert f"{path}: required key web.base_url is missing" in result.output


def test_instants_need_a_zone() -> None:
    assert parse_instant("2026-03-08T02:30:00-05:00") == datetime(2026, 3, 8, 7, 30, tzinfo=timezone.utc)
    assert iso_z(parse_instant("2026-03-08T07:30:00Z")) == "2026-03-08T07:30:00Z"
    with pytest.raises(ValueError, match="has no time zone"):
        parse_instant("2026-03-08T02:30:00")
    with pytest.raises(ValueError, match="not an ISO 8601 instant"):
        parse_instant("next tuesday")


def test_clocks() -> None:
    start = datetime(2026, 1, 1, tzinfo=timezone.utc)
    fixed = FixedClock(start)
    fixed.advance(timedelta(hours=2))
    assert fixed.now() == start + timedelta(hours=2)
    advancing = OffsetClock(start)
    assert start <= advancing.now() < start + timedelta(seconds=5)


def test_contact_hours_default_to_08_to_21_and_may_be_narrower(tmp_path: Path) -> None:
    assert str(load_settings(write(tmp_path, MINIMAL)).contact_hours.hours()) == "08:00-21:00"
    narrow = load_settings(write(tmp_path, MINIMAL + '[contact_hours]\nstart = "09:00"\nend = "20:00"\n'))
    assert str(narrow.contact_hours.hours()) == "09:00-20:00"


@pytest.mark.parametrize("table, named", [
    ('start = "07:00"', "contact_hours.start '07:00' is earlier than 08:00"),
    ('end = "22:00"', "contact_hours.end '22:00' is later than 21:00"),
    ('allow_wider_than_tcpa = "yes"', "contact_hours.allow_wider_than_tcpa 'yes' must be true or false"),
])
def test_contact_hours_wider_than_tcpa_stop_start_up_naming_the_key_and_the_file(tmp_path: Path, table: str,
                                                                                 named: str) -> None:
    path = write(tmp_path, MINIMAL + f"[contact_hours]\n{table}\n")
    with pytest.raises(ConfigError) as error:
        load_settings(path)
    assert str(error.value).startswith(f"{path}: {named}")
    wide = write(tmp_path, MINIMAL + '[contact_hours]\nstart = "07:00"\nend = "22:00"\nallow_wider_than_tcpa = true\n')
    assert str(load_settings(wide).contact_hours.hours()) == "07:00-22:00"


# [web] secret_key: asked for only where something is signed; never a published or short one in public

STRONG = "k" * 32
PUBLIC = "https://sales.example.com"
SQLITE_CONFIG = """
[database]
url = "sqlite:///var/test.db"
[web]
base_url = "{base_url}"
{secret}
[plugins.email]
host = "127.0.0.1"
port = 1
security = "none"
"""


def cli_config(tmp_path: Path, *, base_url: str = PUBLIC, secret: str = f'secret_key = "{STRONG}"') -> Path:
    return write(tmp_path, SQLITE_CONFIG.format(base_url=base_url, secret=secret))


def run(path: Path, *args: str):  # noqa: ANN201
    from click.testing import CliRunner

    from sequencer.cli import main

    return CliRunner().invoke(main, ["--config", str(path), *args])


@pytest.mark.parametrize("secret, says", [
    ('secret_key = { env = "TEST_SEQ_UNSET_SECRET" }', "reads the environment variable TEST_SEQ_UNSET_SECRET, "
                                                        "which is not set; export TEST_SEQ_UNSET_SECRET=$(python -c"),
    ("", "required key web.secret_key is missing; set secret_key = { env = \"SEQUENCER_SECRET_KEY\" } in [web]"),
], ids=["unset-variable", "no-key"])
def test_commands_that_sign_nothing_run_without_a_secret_key(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                             secret: str, says: str) -> None:
    monkeypatch.delenv("TEST_SEQ_UNSET_SECRET", raising=False)
    path = cli_config(tmp_path, secret=secret)
    settings = load_settings(path)  # loading asks for nothing
    with pytest.raises(ConfigError) as error:
        settings.web.secret_key
    assert str(path) in str(error.value) and says in str(error.value)
    for args in (["db", "upgrade"], ["plugins", "list"], ["users", "list"]):
        result = run(path, *args)
        assert result.exit_code == 0, result.output
    for args in (["worker", "--once"], ["serve", "--port", "1"]):
        result = run(path, *args)
        assert result.exit_code == 1 and says in result.output and str(path) in result.output


@pytest.mark.parametrize("key, base_url, refused", [
    ("demo-secret-key-not-for-production", PUBLIC, "is the demo key from demo/config.toml"),
    ("short-but-secret", PUBLIC, "is 16 bytes long; it needs at least 32"),
    ("é" * 15, "http://10.0.0.5:8000", "is 30 bytes long"),  # bytes, not characters
    ("demo-secret-key-not-for-production", "http://localhost.example.com", "is the demo key"),
    ("demo-secret-key-not-for-production", "http://127.0.0.1.nip.io:8000", "is the demo key"),
    ("demo-secret-key-not-for-production", "http://127.0.0.1:8000", None),  # make run
    ("short", "http://localhost:8000", None),
    ("short", "http://127.1.2.3/", None),
    ("short", "http://[::1]:8000/", None),
    ("short", "http://app.localhost/", None),  # RFC 6761: .localhost is loopback
    (STRONG, PUBLIC, None),
])
def test_serving_refuses_a_demo_or_short_key_unless_base_url_is_this_machine(
        tmp_path: Path, key: str, base_url: str, refused: str | None) -> None:
    settings = load_settings(cli_config(tmp_path, base_url=base_url, secret=f'secret_key = "{key}"'))
    if refused is None:
        check_secret_for_serving(settings)
        return
    with pytest.raises(ConfigError) as error:
        check_secret_for_serving(settings)
    message = str(error.value)
    assert message.startswith(f"{settings.path}: [web] secret_key {refused}")
    assert f"[web] base_url {base_url} is not on this machine" in message
    assert "export SEQUENCER_SECRET_KEY=$(python -c 'import secrets; print(secrets.token_urlsafe(48))')" in message


def test_serve_and_worker_say_why_they_refuse(tmp_path: Path) -> None:
    path = cli_config(tmp_path, secret='secret_key = "demo-secret-key-not-for-production"')
    assert run(path, "db", "upgrade").exit_code == 0
    for args in (["worker", "--once"], ["serve", "--port", "1"]):
        result = run(path, *args)
        assert result.exit_code == 1
        assert "[web] secret_key is the demo key" in result.output and "export SEQUENCER_SECRET_KEY" in result.output
    local = cli_config(tmp_path, base_url="http://127.0.0.1:8000",
                       secret='secret_key = "demo-secret-key-not-for-production"')
    result = run(local, "worker", "--once")
    assert result.exit_code == 0 and '"claimed": 0' in result.output


def test_the_wsgi_entry_point_refuses_as_serve_does(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import runpy

    monkeypatch.setenv("SEQUENCER_CONFIG", str(cli_config(tmp_path, secret='secret_key = "short"')))
    with pytest.raises(ConfigError, match=r"\[web\] secret_key is 5 bytes long"):
        runpy.run_module("sequencer.web.wsgi")


def test_the_demo_config_serves_on_localhost() -> None:
    demo = load_settings(REPO / "demo" / "config.toml")
    assert is_this_machine(demo.web.base_url)
    check_secret_for_serving(demo)  # `make run` keeps working
