"""POST /hooks/email/inbound: raw messages over HTTP with a shared secret, on SQLite and PostgreSQL."""
from __future__ import annotations

import pytest
import sqlalchemy as sa
import sqlalchemy.orm as so

from sequencer.config import load_settings
from sequencer.models import Enrollment, InboundEvent
from sequencer.runtime import Runtime
from sequencer.web import create_app
from sequencer.testing import world
from sequencer_email import webhook as hooks
from test_inbound import arf_naming_nobody
from sequencer.testing.world import app_fixture, client_fixture, lead_id_fixture  # noqa: F401 - fixtures

URL = "/hooks/email/inbound"
SECRET = "test-inbound-secret"  # sequencer.testing.write_config


def reply(message_id: str = "<reply-1@example.com>") -> bytes:
    return world.reply(sender="Jane Doe <jane.doe@example.com>", subject="Re: Quick question",
                       message_id=message_id, body="Yes, let's talk on Thursday.")


def events(runtime) -> list[tuple[str, int | None, str | None]]:
    with runtime.session() as session:
        return [(e.kind, e.lead_id, e.message_id) for e in session.scalars(sa.select(InboundEvent))]


def states(runtime, lead_id: int) -> list[str]:
    with runtime.session() as session:
        return [str(getattr(s, "value", s)) for s in session.scalars(
            sa.select(Enrollment.state).where(Enrollment.lead_id == lead_id))]


@pytest.mark.parametrize("headers", [{"Authorization": f"Bearer {SECRET}"}, {"X-Sequencer-Secret": SECRET}],
                         ids=["bearer", "x-sequencer-secret"])
def test_good_secret_acts_on_the_message(client, runtime, lead_id, headers) -> None:
    response = client.post(URL, data=reply(), headers={**headers, "Content-Type": "message/rfc822"})
    assert response.status_code == 200
    assert response.json["kind"] == "reply"
    assert response.json["lead_id"] == lead_id
    assert "ended 1 enrollment(s) as replied" in response.json["actions"]
    assert events(runtime) == [("reply", lead_id, "<reply-1@example.com>")]
    assert states(runtime, lead_id) == ["replied"]


@pytest.mark.parametrize("headers", [
    {"Authorization": "Bearer wrong-secret"},
    {"X-Sequencer-Secret": SECRET + "x"},
    {"Authorization": f"Basic {SECRET}"},
    {"X-Sequencer-Secret": ""},
    {},
], ids=["bad-bearer", "bad-header", "not-bearer", "empty", "missing"])
def test_bad_or_missing_secret_is_refused_and_nothing_recorded(client, runtime, lead_id, headers) -> None:
    response = client.post(URL, data=reply(), headers=headers)
    assert response.status_code == 403
    assert "shared secret" in response.json["error"]
    assert events(runtime) == []
    assert states(runtime, lead_id) == ["active"]


def test_endpoint_is_off_without_a_secret(runtime, lead_id) -> None:
    runtime.settings.plugins["email"].pop("inbound_secret")
    client = create_app(runtime, test_config={"TESTING": True}).test_client()
    response = client.post(URL, data=reply(), headers={"Authorization": f"Bearer {SECRET}"})
    assert response.status_code == 404
    assert events(runtime) == []


@pytest.mark.parametrize("table", ["plugins.email", "web"])
def test_secret_is_read_from_the_plugin_table_and_from_the_old_web_key(runtime, lead_id, clock, tmp_path,
                                                                      table) -> None:
    text = runtime.settings.path.read_text(encoding="utf-8").replace(f'inbound_secret = "{SECRET}"\n', "")
    text = text.replace(f"[{table}]\n", f'[{table}]\ninbound_secret = "moved-secret"\n', 1)
    config = tmp_path / f"{table}.toml"
    config.write_text(text, encoding="utf-8")
    if table == "web":
        with pytest.warns(DeprecationWarning, match=r"\[web\] inbound_secret is deprecated; move it to "
                                                    r"\[plugins.email\] inbound_secret"):
            settings = load_settings(config)
    else:
        settings = load_settings(config)
    moved = Runtime(settings, clock)
    try:
        client = create_app(moved, test_config={"TESTING": True}).test_client()
        assert client.post(URL, data=reply(), headers={"X-Sequencer-Secret": SECRET}).status_code == 403
        response = client.post(URL, data=reply(), headers={"X-Sequencer-Secret": "moved-secret"})
        assert response.status_code == 200 and response.json["lead_id"] == lead_id
    finally:
        moved.dispose()


def test_empty_body_is_a_bad_request(client, runtime) -> None:
    response = client.post(URL, data=b"  \r\n", headers={"X-Sequencer-Secret": SECRET})
    assert response.status_code == 400
    assert events(runtime) == []


def test_oversized_message_is_refused(client, runtime) -> None:
    big = reply() + b"x" * (hooks.MAX_MESSAGE_BYTES + 1)
    response = client.post(URL, data=big, headers={"X-Sequencer-Secret": SECRET})
    assert response.status_code == 413
    assert events(runtime) == []


def test_a_retried_delivery_is_acted_on_once(client, runtime, lead_id) -> None:
    first = client.post(URL, data=reply(), headers={"X-Sequencer-Secret": SECRET})
    again = client.post(URL, data=reply(), headers={"X-Sequencer-Secret": SECRET})
    assert (first.status_code, again.status_code) == (200, 200)
    assert again.json == {"kind": "reply", "lead_id": lead_id, "actions": [], "duplicate": True}
    assert len(events(runtime)) == 1


def test_get_is_not_allowed(client) -> None:
    assert client.get(URL, headers={"X-Sequencer-Secret": SECRET}).status_code == 405


def test_a_message_that_cannot_be_acted_on_is_answered_200(client, runtime, lead_id) -> None:
    """A 4xx or 5xx would make the provider deliver it again, forever."""
    response = client.post(URL, data=arf_naming_nobody(), headers={"X-Sequencer-Secret": SECRET})
    assert response.status_code == 200
    assert response.json == {"kind": "complaint", "lead_id": None, "actions": [],
                             "unmatched": "the complaint names no recipient"}
    assert events(runtime) == [("complaint", None, "<fbl-redacted@isp.example>")]
    assert states(runtime, lead_id) == ["active"]


def test_database_down_asks_the_provider_to_retry(client, runtime, tmp_path, monkeypatch) -> None:
    unreachable = sa.create_engine(f"sqlite:///{tmp_path / 'no-such-dir' / 'db.sqlite'}")
    monkeypatch.setattr(runtime, "sessionmaker", so.sessionmaker(unreachable))
    response = client.post(URL, data=reply(), headers={"X-Sequencer-Secret": SECRET})
    assert response.status_code == 503
    assert response.headers["Retry-After"] == str(hooks.RETRY_AFTER_SECONDS)
    assert response.json["error"].startswith("the database is unavailable, try again later")
    unreachable.dispose()
