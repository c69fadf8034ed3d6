"""Render message templates (email, SMS, call scripts, task instructions) in Jinja's sandbox.

Pure: no database. The engine builds a context with `build_context`, then asks a
long-lived `Renderer` for the message; any reason a lead's message cannot be
rendered comes back as a `TemplateProblem` with a sentence fit for a preflight report.
"""

from __future__ import annotations

import contextvars
import functools
import re
import string
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from html import escape
from html.parser import HTMLParser
from pathlib import Path
from typing import Any, Literal

from jinja2 import (
    Environment,
    FileSystemLoader,
    StrictUndefined,
    Template,
    TemplateNotFound,
    TemplateSyntaxError,
    Undefined,
    UndefinedError,
    meta,
    nodes,
)
from jinja2.exceptions import SecurityError, TemplateError, TemplateRuntimeError
from jinja2.sandbox import ImmutableSandboxedEnvironment

Kind = Literal["html", "text"]

# Characters that end a line for str.splitlines; any of them in a subject could split a header.
_LINE_BREAKS = re.compile(r"[\r\n\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029]")
_UNDEFINED_NAME = re.compile(r"^'(?P<name>[^']+)' is undefined$")
_MISSING_KEY = re.compile(r"has no (?:attribute|element) (?P<name>.+)$")
_PERCENT_SPEC = re.compile(r"%(?:\([^)]*\))?[-#0 +]*(?P<width>\*|\d+)?(?:\.(?P<precision>\*|\d+))?")
_IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
# Exponents beyond this only serve to burn CPU building huge integers.
_MAX_EXPONENT = 1024
# Built-in filters whose integer argument sets the size of what they build.
_SIZED_FILTERS = ("center", "indent", "batch", "slice")
_CONTEXT_ROOTS = ("lead", "owner", "sender")

_deadline: contextvars.ContextVar[float | None] = contextvars.ContextVar("render_deadline", default=None)


class TemplateProblem(Exception):
    """A template that cannot render for one lead; .reason is a readable sentence naming the template and the fix."""

    reason: str
    variable: str | None

    def __init__(self, reason: str, *, variable: str | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.variable = variable


@dataclass(frozen=True)
class RenderedMessage:
    """A rendered email: subject, plain-text part and HTML part."""

    subject: str | None
    text: str
    html: str | None


class _LimitExceeded(TemplateRuntimeError):
    """A render went past the output size, time or repetition limits."""


class _MessageEnvironment(ImmutableSandboxedEnvironment):
    """Jinja's immutable sandbox with message-sized limits on ranges, repetition, widths and time."""

    MAX_RANGE = 10_000
    intercepted_binops = frozenset({"*", "**", "%"})

    def __init__(self, *, max_output_chars: int, max_render_seconds: float, **options: Any) -> None:
        super().__init__(finalize=_refuse_callables, **options)
        self.max_output_chars = max_output_chars
        self.max_render_seconds = max_render_seconds
        # Jinja's safe_range reads a module constant; a closure keeps our lower limit per environment.
        self.globals["range"] = self._bounded_range()
        # Placeholder text has no place in a customer message and lipsum(n) is unbounded work.
        del self.globals["lipsum"]
        for name in _SIZED_FILTERS:
            self.filters[name] = self._sized(self.filters[name])
        self.filters["format"] = self._guarded_format(self.filters["format"])

    def getattr(self, obj: Any, attribute: str) -> Any:
        """Read a mapping's key before its methods, so a custom field named `items` is the field."""
        if isinstance(obj, Mapping) and attribute in obj:
            return obj[attribute]
        return super().getattr(obj, attribute)

    def call(__self, __context: Any, __obj: Any, *args: Any, **kwargs: Any) -> Any:  # noqa: N805
        """Call from a template, checking the deadline and the widths a string method would build."""
        __self.check_deadline()
        for value in (*args, *kwargs.values()):
            # A recursive macro fed its own doubled output grows without emitting a chunk we could measure.
            if isinstance(value, str) and len(value) > __self.max_output_chars:
                raise _LimitExceeded(f"builds a value longer than the {__self.max_output_chars:,}-character limit")
        target = getattr(__obj, "__wrapped__", __obj)
        bound_to = getattr(target, "__self__", None)
        if isinstance(bound_to, str):
            if getattr(target, "__name__", "") in ("format", "format_map"):
                __self.check_brace_widths(bound_to)
            else:
                __self.check_sizes(args, kwargs)
        return super().call(__context, __obj, *args, **kwargs)

    def call_binop(self, context: Any, operator: str, left: Any, right: Any) -> Any:
        """Refuse repetition, powers and %-widths that would build an oversized value."""
        if operator == "*":
            for seq, times in ((left, right), (right, left)):
                if isinstance(seq, (str, list, tuple)) and isinstance(times, int):
                    if len(seq) * times > self.max_output_chars:
                        raise _LimitExceeded(
                            f"repeats a value to more than the {self.max_output_chars:,}-character limit"
                        )
        elif operator == "**":
            if isinstance(left, int) and isinstance(right, int) and abs(left) > 1 and right > _MAX_EXPONENT:
                raise _LimitExceeded(f"raises a number to the power {right:,} (at most {_MAX_EXPONENT:,} allowed)")
        elif operator == "%" and isinstance(left, str):
            self.check_percent_widths(left)
        return super().call_binop(context, operator, left, right)

    def check_deadline(self) -> None:
        """Raise when the current render has used up its time."""
        deadline = _deadline.get()
        if deadline is not None and time.monotonic() > deadline:
            raise _LimitExceeded(f"took longer than {self.max_render_seconds:g} s to render")

    def check_sizes(self, args: Iterable[Any], kwargs: Mapping[str, Any]) -> None:
        """Raise when an integer argument asks for more than the output limit."""
        for value in (*args, *kwargs.values()):
            if isinstance(value, int) and not isinstance(value, bool) and abs(value) > self.max_output_chars:
                raise _LimitExceeded(
                    f"asks for a width or count of {value:,}, more than the {self.max_output_chars:,}-character limit"
                )

    def check_percent_widths(self, fmt: str) -> None:
        """Raise when a %-format string asks for a field wider than the output limit."""
        for match in _PERCENT_SPEC.finditer(fmt):
            for size in (match["width"], match["precision"]):
                if size == "*":
                    raise _LimitExceeded("uses a '*' width in a % format; write the width as a number")
                if size is not None:
                    self.check_sizes((int(size),), {})

    def check_brace_widths(self, fmt: str) -> None:
        """Raise when a str.format string asks for a field wider than the output limit."""
        for _, _, spec, _ in string.Formatter().parse(fmt):
            if not spec:
                continue
            if "{" in spec:
                raise _LimitExceeded("uses a nested {} width in a format string; write the width as a number")
            self.check_sizes([int(digits) for digits in re.findall(r"\d+", spec)], {})

    def _bounded_range(self) -> Callable[..., range]:
        limit = self.MAX_RANGE

        def bounded_range(*args: int) -> range:
            numbers = range(*args)
            if len(numbers) > limit:
                raise _LimitExceeded(f"asks for range() of {len(numbers):,} items (at most {limit:,} allowed)")
            return numbers

        return bounded_range

    def _sized(self, func: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(func)
        def sized(*args: Any, **kwargs: Any) -> Any:
            self.check_sizes(args, kwargs)
            return func(*args, **kwargs)

        return sized

    def _guarded_format(self, func: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(func)
        def guarded(value: Any, *args: Any, **kwargs: Any) -> Any:
            self.check_percent_widths(str(value))
            return func(value, *args, **kwargs)

        return guarded


def _refuse_callables(value: Any) -> Any:
    """Refuse to print a function: its repr means nothing to a lead and `|attr` tricks fish for them."""
    if callable(value) and not isinstance(value, Undefined):
        raise SecurityError(f"printing {type(value).__name__} objects is not allowed")
    return value


@dataclass(frozen=True)
class _Part:
    """A compiled template plus what a reason calls it and where its source is."""

    template: Template
    kind: Kind
    label: str
    inline_source: str | None = None


class Renderer:
    """Compile, cache and render message templates; build one per process and reuse it."""

    def __init__(
        self,
        template_dir: Path | None,
        *,
        max_output_chars: int = 200_000,
        max_render_seconds: float = 2.0,
        prepare_env: Callable[[Environment], None] | None = None,
    ) -> None:
        self.template_dir = template_dir
        self.max_output_chars = max_output_chars
        self.max_render_seconds = max_render_seconds
        self._envs: dict[Kind, _MessageEnvironment] = {
            "html": self._make_env(autoescape=True, prepare_env=prepare_env),
            "text": self._make_env(autoescape=False, prepare_env=prepare_env),
        }
        self._inline: dict[tuple[Kind, str], Template] = {}

    def render_email(
        self, *, subject: str | None, template: str | None, body: str | None, context: Mapping[str, Any]
    ) -> RenderedMessage:
        """Render an email's subject, text and HTML parts for one lead."""
        html_part, text_part = self._email_parts(template, body)
        rendered_subject = self._render_subject(subject, context)
        html = self._render(html_part, context) if html_part else None
        text = self._render(text_part, context) if text_part else None
        if text is None:
            text = _html_to_text(html or "")
        if html is None:
            html = _text_to_html(text)
        return RenderedMessage(subject=rendered_subject, text=text, html=html)

    def render_text(self, *, template: str | None, body: str | None, context: Mapping[str, Any]) -> str:
        """Render an SMS, call script or task instruction in the text environment."""
        return self._render(self._text_part(template, body), context)

    def check(self, *, subject: str | None, template: str | None, body: str | None) -> None:
        """Compile a step's subject and body, raising TemplateProblem on a syntax error or missing file."""
        if subject is not None:
            self._inline_part("text", subject, "the subject")
        self._email_parts(template, body)

    def variables(self, *, subject: str | None, template: str | None, body: str | None) -> set[str]:
        """Return the top-level names a step's subject and body refer to."""
        parts = [part for part in self._email_parts(template, body) if part is not None]
        if subject is not None:
            parts.append(self._inline_part("text", subject, "the subject"))
        env = self._envs["text"]
        names: set[str] = set()
        for part in parts:
            names |= meta.find_undeclared_variables(env.parse(self._source(part)))
        return names

    def _make_env(
        self, *, autoescape: bool, prepare_env: Callable[[Environment], None] | None
    ) -> _MessageEnvironment:
        env = _MessageEnvironment(
            loader=FileSystemLoader(self.template_dir) if self.template_dir is not None else None,
            autoescape=autoescape,
            undefined=StrictUndefined,
            # Block tags on their own line must not leave blank lines in a plain-text message.
            trim_blocks=True,
            lstrip_blocks=True,
            max_output_chars=self.max_output_chars,
            max_render_seconds=self.max_render_seconds,
        )
        if prepare_env is not None:
            prepare_env(env)
        return env

    def _email_parts(self, template: str | None, body: str | None) -> tuple[_Part | None, _Part | None]:
        """Return the compiled (html, text) parts of an email step; at least one is set."""
        _require_one(template, body)
        if body is not None:
            return None, self._inline_part("text", body, "the inline body")
        assert template is not None
        if template.endswith(".html"):
            return self._file_part("html", template, template, expected=template), None
        if template.endswith(".txt"):
            return None, self._file_part("text", template, template, expected=template)
        html_part = self._file_part("html", f"{template}.html", template, expected=None)
        text_part = self._file_part(
            "text", f"{template}.txt", template, expected=None if html_part else f"{template}.txt or {template}.html"
        )
        return html_part, text_part

    def _text_part(self, template: str | None, body: str | None) -> _Part:
        _require_one(template, body)
        if body is not None:
            return self._inline_part("text", body, "the inline body")
        assert template is not None
        name = template if template.endswith(".txt") else f"{template}.txt"
        part = self._file_part("text", name, template, expected=name)
        assert part is not None
        return part

    def _file_part(self, kind: Kind, name: str, step_name: str, *, expected: str | None) -> _Part | None:
        """Load a library file; when it does not exist return None, or raise naming the `expected` files."""
        env = self._envs[kind]
        label = f"template {name!r}"
        if env.loader is None:
            raise TemplateProblem(f"{label} cannot be loaded: no template directory is configured")
        try:
            template = env.get_template(name)
        except TemplateNotFound:
            if expected is None:
                return None
            raise TemplateProblem(
                f"template {step_name!r} not found: add {expected} under {self.template_dir}"
            ) from None
        except TemplateSyntaxError as exc:
            raise _syntax_problem(exc, label) from exc
        return _Part(template, kind, label)

    def _inline_part(self, kind: Kind, source: str, label: str) -> _Part:
        template = self._inline.get((kind, source))
        if template is None:
            try:
                template = self._envs[kind].from_string(source)
            except TemplateSyntaxError as exc:
                raise _syntax_problem(exc, label) from exc
            self._inline[(kind, source)] = template
        return _Part(template, kind, label, inline_source=source)

    def _source(self, part: _Part) -> str:
        if part.inline_source is not None:
            return part.inline_source
        env = self._envs[part.kind]
        assert env.loader is not None and part.template.name is not None
        return env.loader.get_source(env, part.template.name)[0]

    def _render_subject(self, subject: str | None, context: Mapping[str, Any]) -> str | None:
        if subject is None:
            return None
        rendered = self._render(self._inline_part("text", subject, "the subject"), context)
        if _LINE_BREAKS.search(rendered):
            raise TemplateProblem(
                f"the subject renders with a line break ({rendered!r}), which could inject mail headers;"
                " remove the line break from the lead's field or from the subject"
            )
        return rendered

    def _render(self, part: _Part, context: Mapping[str, Any]) -> str:
        """Render one part, enforcing the size and time limits and turning every failure into a reason."""
        env = self._envs[part.kind]
        token = _deadline.set(time.monotonic() + self.max_render_seconds)
        try:
            chunks: list[str] = []
            size = 0
            for chunk in part.template.generate(context):
                size += len(chunk)
                if size > self.max_output_chars:
                    raise _LimitExceeded(f"produces more than {self.max_output_chars:,} characters")
                env.check_deadline()
                chunks.append(chunk)
        except _LimitExceeded as exc:
            raise TemplateProblem(
                f"{part.label} {exc.message}; simplify it (a loop or repeated text is the usual cause)"
            ) from exc
        except UndefinedError as exc:
            raise self._missing_problem(part, exc, context) from exc
        except SecurityError as exc:
            raise TemplateProblem(
                f"{part.label} does something message templates are not allowed to do ({exc.message});"
                " remove that expression, templates may only read lead, owner and sender fields"
            ) from exc
        except TemplateSyntaxError as exc:
            # An included or extended file that does not compile.
            raise _syntax_problem(exc, part.label) from exc
        except TemplateError as exc:
            raise TemplateProblem(f"{part.label} cannot render for this lead: {exc.message}") from exc
        except Exception as exc:  # a template bug or a plugin filter failing must block this lead only
            raise TemplateProblem(
                f"{part.label} failed while rendering for this lead ({type(exc).__name__}: {exc}); fix the template"
            ) from exc
        finally:
            _deadline.reset(token)
        return "".join(chunks).strip()

    def _missing_problem(self, part: _Part, exc: UndefinedError, context: Mapping[str, Any]) -> TemplateProblem:
        message = exc.message or str(exc)
        path = _missing_path(message, self._envs[part.kind].parse(self._source(part)), context)
        if path is None:
            return TemplateProblem(
                f"{part.label} cannot render for this lead ({message}); fill the field or give it a default"
            )
        fallback = "there" if path.endswith("name") else "..."
        return TemplateProblem(
            f"{part.label} uses {path}, which is empty or missing for this lead;"
            f" fill the field or use {{{{ {path} | default('{fallback}') }}}}",
            variable=path,
        )


def build_context(
    *,
    lead: Mapping[str, Any],
    owner: Mapping[str, Any] | None,
    sender: Mapping[str, Any] | None,
    extra: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Return the template variables for one lead, with empty values removed so they count as missing.

    Keys of `lead` other than `custom_fields` are its standard fields. Custom fields
    are added beside them unless a standard field has that name (even an empty one);
    all of them stay reachable as `lead.custom_fields.NAME`. `extra` (unsubscribe_url,
    plugin enrichment) is merged at the top level.
    """
    standard = {key: value for key, value in lead.items() if key != "custom_fields"}
    custom = _clean(lead.get("custom_fields") or {})
    lead_vars = _clean(standard)
    for key, value in custom.items():
        if key not in standard:
            lead_vars[key] = value
    if custom:
        lead_vars["custom_fields"] = custom
    context: dict[str, Any] = {"lead": lead_vars, "owner": _clean(owner or {}), "sender": _clean(sender or {})}
    for key, value in _clean(extra or {}).items():
        if key in _CONTEXT_ROOTS:
            raise ValueError(f"extra template variable {key!r} would hide the {key} fields; rename it")
        context[key] = value
    return context


def _clean(values: Mapping[str, Any]) -> dict[str, Any]:
    """Drop None and blank strings (recursively), strip the rest: an empty field counts as missing."""
    cleaned: dict[str, Any] = {}
    for key, value in values.items():
        if isinstance(value, str):
            value = value.strip()
            if not value:
                continue
        elif isinstance(value, Mapping):
            value = _clean(value)
        elif value is None:
            continue
        cleaned[key] = value
    return cleaned


def _require_one(template: str | None, body: str | None) -> None:
    if (template is None) == (body is None):
        found = "both" if template is not None else "neither"
        raise TemplateProblem(
            f"a step needs exactly one of `template` (a file in the library) or `body` (inline text); it has {found}"
        )


def _syntax_problem(exc: TemplateSyntaxError, label: str) -> TemplateProblem:
    where = f"template {exc.name!r}" if exc.name else label
    return TemplateProblem(f"{where} line {exc.lineno}: {exc.message}; fix the template syntax")


def _missing_path(message: str, ast: nodes.Template, context: Mapping[str, Any]) -> str | None:
    """Name the variable an UndefinedError is about, as the template spells it (`lead.first_name`)."""
    paths = [path for node in ast.find_all((nodes.Getattr, nodes.Getitem)) if (path := _dotted(node))]
    if match := _UNDEFINED_NAME.match(message):
        name = match["name"]
        return _format_path(next((path for path in paths if path[0] == name), (name,)))
    if match := _MISSING_KEY.search(message):
        key = match["name"].strip("'\"")
        candidates = [path for path in paths if path[-1] == key]
        lacking = [path for path in candidates if _lacks(context, path)]
        return _format_path((lacking or candidates or [(key,)])[0])
    return None


def _dotted(node: nodes.Node) -> tuple[str, ...] | None:
    if isinstance(node, nodes.Name):
        return (node.name,)
    if isinstance(node, nodes.Getattr):
        base = _dotted(node.node)
        return base + (node.attr,) if base else None
    if isinstance(node, nodes.Getitem) and isinstance(node.arg, nodes.Const) and isinstance(node.arg.value, str):
        base = _dotted(node.node)
        return base + (node.arg.value,) if base else None
    return None


def _lacks(context: Mapping[str, Any], path: tuple[str, ...]) -> bool:
    """Tell whether the context has every step of `path` but its last key."""
    value: Any = context
    for key in path[:-1]:
        if not (isinstance(value, Mapping) and key in value):
            return False
        value = value[key]
    return isinstance(value, Mapping) and path[-1] not in value


def _format_path(path: tuple[str, ...]) -> str:
    head, *rest = path
    return head + "".join(f".{key}" if _IDENTIFIER.match(key) else f"[{key!r}]" for key in rest)


def _text_to_html(text: str) -> str:
    """Turn plain text into escaped HTML paragraphs: blank lines split paragraphs, newlines become <br>."""
    paragraphs = re.split(r"\n[ \t]*\n\s*", text.replace("\r\n", "\n").strip())
    return "\n".join(
        "<p>" + "<br>\n".join(escape(line) for line in paragraph.split("\n")) + "</p>"
        for paragraph in paragraphs
        if paragraph
    )


def _html_to_text(html: str) -> str:
    """Return the readable plain text of an HTML fragment, keeping paragraphs, line breaks and list items."""
    parser = _PlainText()
    parser.feed(html)
    parser.close()
    return parser.text()


class _PlainText(HTMLParser):
    """Collect the text of an HTML fragment with the line structure a reader sees."""

    _BLOCKS = frozenset(
        {"p", "div", "h1", "h2", "h3", "h4", "h5", "h6", "ul", "ol", "table", "tr", "blockquote", "pre", "hr"}
    )
    _HIDDEN = frozenset({"script", "style", "head", "title"})

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self._chunks: list[str] = []
        self._hidden = 0
        self._links: list[tuple[str | None, int]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in self._HIDDEN:
            self._hidden += 1
        elif tag == "br":
            self._chunks.append("\n")
        elif tag == "li":
            self._chunks.append("\n- ")
        elif tag in self._BLOCKS:
            self._chunks.append("\n\n")
        elif tag == "a":
            self._links.append((dict(attrs).get("href"), len(self._chunks)))

    def handle_endtag(self, tag: str) -> None:
        if tag in self._HIDDEN:
            self._hidden = max(0, self._hidden - 1)
        elif tag in self._BLOCKS:
            self._chunks.append("\n\n")
        elif tag == "a" and self._links:
            href, start = self._links.pop()
            # A plain-text reader still needs the address the link pointed to.
            if href and href.startswith(("http://", "https://", "mailto:")):
                if href not in "".join(self._chunks[start:]):
                    self._chunks.append(f" ({href})")

    def handle_data(self, data: str) -> None:
        if not self._hidden:
            self._chunks.append(re.sub(r"\s+", " ", data))

    def text(self) -> str:
        """Return the collected text with tidy lines and at most one blank line between blocks."""
        lines = (line.strip() for line in "".join(self._chunks).split("\n"))
        return re.sub(r"\n{3,}", "\n\n", "\n".join(lines)).strip()
