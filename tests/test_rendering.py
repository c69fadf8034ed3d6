"""Tests for sequencer.rendering: sandboxed message templates, lead context, limits."""

from __future__ import annotations

import re
from collections import Counter
import time
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from jinja2 import Environment

from sequencer.rendering import RenderedMessage, Renderer, TemplateProblem, build_context

LIBRARY = Path(__file__).resolve().parents[1] / "templates"


def write(root: Path, files: dict[str, str]) -> Path:
    """Write a throwaway template library and return its root."""
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    return root


def context(**lead: Any) -> dict[str, Any]:
    """Return a context for a lead with the given fields, a rep and a mailbox."""
    return build_context(
        lead={"first_name": "Anna", "company": "Acme", **lead},
        owner={"name": "Boris Rep", "email": "boris@seller.example", "phone": None},
        sender={"address": "boris@seller.example", "display_name": "Boris from Seller", "signature": ""},
    )


def render_body(body: str, ctx: dict[str, Any], **options: Any) -> str:
    return Renderer(None, **options).render_text(template=None, body=body, context=ctx)


def test_html_template_escapes_lead_fields_and_text_part_does_not(tmp_path: Path) -> None:
    root = write(
        tmp_path,
        {
            "email/hello.html": "<p>Hi {{ lead.first_name }}</p>",
            "email/hello.txt": "Hi {{ lead.first_name }}",
        },
    )
    message = Renderer(root).render_email(
        subject="For {{ lead.first_name }}",
        template="email/hello",
        body=None,
        context=context(first_name="<script>alert(1)</script>"),
    )
    assert message.html == "<p>Hi &lt;script&gt;alert(1)&lt;/script&gt;</p>"
    assert message.text == "Hi <script>alert(1)</script>"
    assert message.subject == "For <script>alert(1)</script>"


def test_text_environment_does_not_escape() -> None:
    assert render_body("{{ lead.company }} & co", context(company="R&D <Labs>")) == "R&D <Labs> & co"


def test_txt_only_template_gets_escaped_paragraph_html(tmp_path: Path) -> None:
    root = write(tmp_path, {"email/note.txt": "Hi {{ lead.first_name }},\nquick one.\n\nSee you,\n{{ sender.display_name }}\n"})
    message = Renderer(root).render_email(subject=None, template="email/note", body=None, context=context(first_name="A&B"))
    assert message == RenderedMessage(
        subject=None,
        text="Hi A&B,\nquick one.\n\nSee you,\nBoris from Seller",
        html="<p>Hi A&amp;B,<br>\nquick one.</p>\n<p>See you,<br>\nBoris from Seller</p>",
    )


def test_inline_body_is_a_text_template() -> None:
    message = Renderer(None).render_email(
        subject="Hello", template=None, body="One <b>\n\nTwo", context=context()
    )
    assert message.text == "One <b>\n\nTwo"
    assert message.html == "<p>One &lt;b&gt;</p>\n<p>Two</p>"


def test_html_only_template_gets_readable_text(tmp_path: Path) -> None:
    root = write(
        tmp_path,
        {
            "email/rich.html": (
                "<html><head><style>p { color: red }</style></head><body>\n"
                "<p>Hi {{ lead.first_name }},</p>\n"
                "<p>Tom &amp; Jerry&nbsp;say\n   hello.<br>Second line</p>\n"
                "<ul><li>One</li><li>Two</li></ul>\n"
                '<p><a href="https://example.com/demo">Book a demo</a></p>'
                "</body></html>"
            )
        },
    )
    message = Renderer(root).render_email(subject=None, template="email/rich", body=None, context=context())
    assert message.text == (
        "Hi Anna,\n\nTom & Jerry say hello.\nSecond line\n\n- One\n- Two\n\nBook a demo (https://example.com/demo)"
    )
    assert message.html is not None and "<p>Hi Anna,</p>" in message.html


def test_missing_variable_names_template_and_variable(tmp_path: Path) -> None:
    root = write(tmp_path, {"email/intro.txt": "Hi {{ lead.first_name }} at {{ lead.company }}"})
    ctx = build_context(lead={"company": "Acme"}, owner=None, sender=None)
    with pytest.raises(TemplateProblem) as caught:
        Renderer(root).render_email(subject=None, template="email/intro", body=None, context=ctx)
    assert caught.value.variable == "lead.first_name"
    assert "'email/intro.txt'" in caught.value.reason
    assert "lead.first_name" in caught.value.reason
    assert "default('there')" in caught.value.reason


def test_missing_top_level_and_nested_names_are_named() -> None:
    with pytest.raises(TemplateProblem) as caught:
        render_body("{{ unsubscribe_url }}", context())
    assert caught.value.variable == "unsubscribe_url"
    with pytest.raises(TemplateProblem) as caught:
        render_body("Call {{ owner.phone }}", context())
    assert caught.value.variable == "owner.phone"
    with pytest.raises(TemplateProblem) as caught:
        render_body("{{ lead.company }} / {{ lead['Deal size'] }}", context())
    assert caught.value.variable == "lead['Deal size']"


@pytest.mark.parametrize("empty", ["", "   ", "\n\t", None])
def test_empty_field_counts_as_missing(empty: str | None) -> None:
    with pytest.raises(TemplateProblem) as caught:
        render_body("Hi {{ lead.first_name }},", context(first_name=empty))
    assert caught.value.variable == "lead.first_name"


@pytest.mark.parametrize("first_name", ["", None, "  "])
def test_default_filter_covers_missing_and_empty(first_name: str | None) -> None:
    ctx = context(first_name=first_name)
    assert render_body("Hi {{ lead.first_name | default('there') }},", ctx) == "Hi there,"
    assert render_body("{% if lead.first_name is defined %}named{% else %}anon{% endif %}", ctx) == "anon"


def test_field_values_are_stripped() -> None:
    assert render_body("Hi {{ lead.first_name }}!", context(first_name="  Anna \n")) == "Hi Anna!"


def test_custom_fields_are_usable_and_standard_fields_win() -> None:
    ctx = context(
        title="",
        custom_fields={"plan": "Pro", "company": "Shadow Inc", "title": "CTO", "items": "3 seats", "Deal size": 5000, "note": " "},
    )
    body = "{{ lead.plan }}|{{ lead.company }}|{{ lead.custom_fields.company }}|{{ lead.items }}|{{ lead['Deal size'] }}"
    assert render_body(body, ctx) == "Pro|Acme|Shadow Inc|3 seats|5000"
    # An empty standard field stays missing rather than being filled from a custom field of that name.
    assert render_body("{{ lead.title | default('none') }}", ctx) == "none"
    assert render_body("{{ lead.note | default('none') }}", ctx) == "none"


def test_build_context_merges_extra_and_refuses_shadowing() -> None:
    ctx = build_context(lead={"email": "a@b.example"}, owner=None, sender=None, extra={"unsubscribe_url": "https://x.example/u/t", "blank": ""})
    assert ctx == {"lead": {"email": "a@b.example"}, "owner": {}, "sender": {}, "unsubscribe_url": "https://x.example/u/t"}
    with pytest.raises(ValueError, match="'lead'"):
        build_context(lead={}, owner=None, sender=None, extra={"lead": {}})


@pytest.mark.parametrize(
    "payload",
    [
        "{{ ''.__class__.__mro__ }}",
        "{{ ''.__class__.__mro__[1].__subclasses__() }}",
        "{{ lead.__class__ }}",
        "{{ lead|attr('__class__') }}",
        "{{ ''|attr('format') }}",
        "{{ '{0.__class__.__mro__}'|attr('format')(lead) }}",
        "{{ '{0.__class__}'.format(lead) }}",
        "{{ '{x.__class__}'.format_map({'x': lead}) }}",
        "{{ cycler.__init__.__globals__ }}",
        "{{ self.__init__.__globals__ }}",
        "{{ namespace.__init__.__globals__['os'] }}",
        "{{ lead.update({'first_name': 'x'}) }}",
        "{{ lead.custom_fields.clear() }}",
        "{{ lead.get }}",
        "{{ range.__globals__ }}",
    ],
)
def test_sandbox_escapes_are_refused(payload: str) -> None:
    ctx = context(custom_fields={"plan": "Pro"})
    with pytest.raises(TemplateProblem, match="not allowed") as caught:
        render_body(payload, ctx)
    assert caught.value.reason.startswith("the inline body ")


def test_sandbox_refusal_in_html_template(tmp_path: Path) -> None:
    root = write(tmp_path, {"email/evil.html": "<p>{{ lead.__class__.__mro__ }}</p>"})
    with pytest.raises(TemplateProblem, match=r"template 'email/evil.html' .*not allowed"):
        Renderer(root).render_email(subject=None, template="email/evil", body=None, context=context())


@pytest.mark.parametrize("company", ["Acme\nBcc: victim@example.com", "Acme\rX-Evil: 1", "Acme\u2028Bcc: x@y.example"])
def test_subject_with_line_break_from_lead_field_is_refused(company: str) -> None:
    with pytest.raises(TemplateProblem, match="line break"):
        Renderer(None).render_email(subject="Idea for {{ lead.company }}", template=None, body="Hi", context=context(company=company))


def test_subject_is_stripped() -> None:
    message = Renderer(None).render_email(subject="  Idea for {{ lead.company }}  ", template=None, body="Hi", context=context())
    assert message.subject == "Idea for Acme"


def test_output_size_cap() -> None:
    loop = "{% for i in range(1000) %}0123456789{% endfor %}"
    assert len(render_body(loop, context(), max_output_chars=10_000)) == 10_000
    with pytest.raises(TemplateProblem, match="more than 9,999 characters"):
        render_body(loop, context(), max_output_chars=9_999)


@pytest.mark.parametrize(
    ("payload", "message"),
    [
        ("{% for i in range(10**9) %}x{% endfor %}", "range"),
        ("{{ range(10001)|length }}", "range"),
        ("{{ 'x' * 10**9 }}", "character limit"),
        ("{{ [1, 2] * 10**9 }}", "character limit"),
        ("{{ 9 ** (9 ** 9) }}", "power"),
        ("{{ '%0999999999d' % 1 }}", "width"),
        ("{{ '%0999999999d'|format(1) }}", "width"),
        ("{{ '%*d' % (999999999, 1) }}", "width"),
        ("{{ '{:>999999999}'.format(1) }}", "width"),
        ("{{ 'x'.ljust(999999999) }}", "width"),
        ("{{ 'x'|center(999999999) }}", "width"),
        ("{{ [1]|batch(999999999, 0)|list }}", "width"),
        ("{% macro grow(s) %}{{ grow(s ~ s) }}{% endmacro %}{{ grow('x') }}", "character limit"),
    ],
)
def test_resource_bombs_fail_fast(payload: str, message: str) -> None:
    started = time.monotonic()
    with pytest.raises(TemplateProblem, match=message):
        render_body(payload, context())
    assert time.monotonic() - started < 1.0


def test_render_time_cap() -> None:
    slow = "{% for i in range(10000) %}{% for j in range(10000) %}{{ j }}{% endfor %}{% endfor %}"
    started = time.monotonic()
    with pytest.raises(TemplateProblem, match=r"longer than 0.2 s"):
        render_body(slow, context(), max_output_chars=10**9, max_render_seconds=0.2)
    assert time.monotonic() - started < 1.0


def test_ordinary_formatting_still_works() -> None:
    ctx = context(custom_fields={"revenue": 5_000_000})
    body = "{{ '{:,}'.format(lead.revenue) }} {{ '%05.1f' % 3.14159 }} {{ 'ab'|center(6) }}|{{ '-' * 3 }}"
    assert render_body(body, ctx) == "5,000,000 003.1   ab  |---"


def test_compiled_templates_are_cached(tmp_path: Path) -> None:
    compiled: list[str | None] = []

    def count_compiles(env: Environment) -> None:
        original = env.compile

        def compile(source: Any, name: str | None = None, *args: Any, **kwargs: Any) -> Any:
            compiled.append(name)
            return original(source, name, *args, **kwargs)

        env.compile = compile  # type: ignore[method-assign]

    root = write(tmp_path, {"email/a.txt": "Hi {{ lead.first_name }}"})
    renderer = Renderer(root, prepare_env=count_compiles)
    for _ in range(3):
        renderer.render_email(subject="S {{ lead.company }}", template="email/a", body=None, context=context())
        renderer.render_text(template=None, body="Call {{ lead.first_name }}", context=context())
    assert Counter(compiled) == {"email/a.txt": 1, None: 2}


def test_prepare_env_adds_filters_to_both_environments(tmp_path: Path) -> None:
    def add_shout(env: Environment) -> None:
        env.filters["shout"] = lambda value: f"{value}!".upper()

    root = write(tmp_path, {"email/s.html": "<p>{{ lead.first_name | shout }}</p>"})
    renderer = Renderer(root, prepare_env=add_shout)
    assert renderer.render_email(subject=None, template="email/s", body=None, context=context()).html == "<p>ANNA!</p>"
    assert renderer.render_text(template=None, body="{{ lead.company | shout }}", context=context()) == "ACME!"


def test_check_reports_syntax_errors_with_template_and_line(tmp_path: Path) -> None:
    root = write(tmp_path, {"email/broken.txt": "Hi {{ lead.first_name }},\n\n{% if lead.company %}\nno end"})
    renderer = Renderer(root)
    with pytest.raises(TemplateProblem, match=r"template 'email/broken.txt' line 4: .*endif"):
        renderer.check(subject=None, template="email/broken", body=None)
    with pytest.raises(TemplateProblem, match=r"the subject line 1: "):
        renderer.check(subject="Hi {{ lead.first_name }", template=None, body="ok")


def test_check_reports_missing_files_and_bad_step_shapes(tmp_path: Path) -> None:
    renderer = Renderer(write(tmp_path, {"email/a.txt": "x"}))
    renderer.check(subject="S", template="email/a", body=None)
    with pytest.raises(TemplateProblem, match=r"'email/nope' not found: add email/nope.txt or email/nope.html"):
        renderer.check(subject=None, template="email/nope", body=None)
    with pytest.raises(TemplateProblem, match="not found"):
        renderer.check(subject=None, template="../outside", body=None)
    with pytest.raises(TemplateProblem, match="has both"):
        renderer.check(subject=None, template="email/a", body="x")
    with pytest.raises(TemplateProblem, match="has neither"):
        renderer.render_text(template=None, body=None, context=context())
    with pytest.raises(TemplateProblem, match="no template directory"):
        Renderer(None).check(subject=None, template="email/a", body=None)


def test_variables_lists_top_level_names(tmp_path: Path) -> None:
    renderer = Renderer(write(tmp_path, {"email/a.html": "{{ lead.first_name }} {{ unsubscribe_url }}", "email/a.txt": "{{ sender.display_name }}"}))
    assert renderer.variables(subject="{{ owner.name }}", template="email/a", body=None) == {
        "lead",
        "unsubscribe_url",
        "sender",
        "owner",
    }


def library_context(**lead: Any) -> dict[str, Any]:
    return build_context(
        lead={"first_name": "Anna", "last_name": "Ivanova", "company": "Romashka", "title": "Head of Sales", **lead},
        owner={"name": "Boris Petrov", "email": "boris@seller.example", "phone": "+15551234567"},
        sender={"address": "boris@seller.example", "display_name": "Boris Petrov", "signature": None},
        extra={"unsubscribe_url": "https://seller.example/u/token"},
    )


@pytest.mark.parametrize("name", ["email/intro", "email/follow_up", "email/intro_ru"])
def test_starter_emails_render(name: str) -> None:
    renderer = Renderer(LIBRARY)
    renderer.check(subject="Idea for {{ lead.company }}", template=name, body=None)
    message = renderer.render_email(subject="Idea for {{ lead.company }}", template=name, body=None, context=library_context())
    assert message.subject == "Idea for Romashka"
    assert "Anna" in message.text and "Romashka" in message.text
    assert message.text.endswith("Boris Petrov")
    assert "{" not in message.text and "unsubscribe" not in message.text.lower()
    assert message.html is not None and message.html.startswith("<p>") and message.html.count("<p>") >= 4
    # Without a first name the greeting still reads naturally instead of blocking the lead.
    anonymous = renderer.render_email(subject=None, template=name, body=None, context=library_context(first_name=""))
    assert anonymous.text.splitlines()[0] in ("Hi there,", "Здравствуйте!")


def test_every_library_file_compiles() -> None:
    renderer = Renderer(LIBRARY)
    names = sorted(str(path.relative_to(LIBRARY)) for path in LIBRARY.rglob("*") if path.suffix in (".txt", ".html"))
    assert names
    for name in names:
        renderer.check(subject=None, template=name, body=None)


@pytest.fixture(scope="module")
def hostile_renderer(tmp_path_factory: pytest.TempPathFactory) -> Renderer:
    root = write(
        tmp_path_factory.mktemp("lib"),
        {
            "email/h.html": "<p>Hi {{ lead.first_name | default('friend') }}</p>",
            "email/t.txt": "Hi {{ lead.first_name | default('friend') }}\n\n{{ lead.company | default('') }}",
        },
    )
    return Renderer(root)


@settings(max_examples=300, deadline=None)
@given(field=st.text(), other=st.text())
def test_lead_text_never_breaks_out_of_html(hostile_renderer: Renderer, field: str, other: str) -> None:
    ctx = context(first_name=field, company=other)
    html_only = hostile_renderer.render_email(subject=None, template="email/h", body=None, context=ctx).html
    assert html_only is not None
    assert "<" not in html_only.removeprefix("<p>").removesuffix("</p>")
    from_text = hostile_renderer.render_email(subject=None, template="email/t", body=None, context=ctx).html
    assert from_text is not None
    assert "<" not in re.sub(r"</?p>|<br>", "", from_text)
