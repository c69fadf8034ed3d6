"""Sign-in sessions, roles, CSRF, cookies and security headers for every page of the app.

Every route needs a signed-in user except the public ones: PUBLIC_ENDPOINTS and anything under
/hooks/ (plugins' webhooks, which prove themselves with a signature or a shared secret, not a
cookie). Those webhooks and the RFC 8058 one-click unsubscribe POST are the only routes without
CSRF protection: nothing there acts on a browser's session.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import wraps
from typing import TYPE_CHECKING, Any, Callable, TypeVar
from urllib.parse import urlsplit

from flask import Flask, Response, abort, redirect, render_template, request, url_for
from flask_login import LoginManager, UserMixin, current_user
from flask_wtf.csrf import CSRFError, CSRFProtect

from sequencer.models import Role
from sequencer.users import ROLE_RANK, session_token, user_for_token

if TYPE_CHECKING:
    from sequencer.models import User
    from sequencer.runtime import Runtime

HOOKS_PREFIX = "/hooks/"
PUBLIC_ENDPOINTS = frozenset({"static", "health.healthz", "auth.login", "unsubscribe.confirm",
                              "unsubscribe.unsubscribe"})
# Exempt from CSRF besides /hooks/: providers POST the one-click unsubscribe without any cookie.
CSRF_EXEMPT_ENDPOINTS = frozenset({"unsubscribe.unsubscribe"})

# No inline script or style, no plugins, no framing; Pico draws its icons with data: SVGs.
CONTENT_SECURITY_POLICY = ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
                           "object-src 'none'; base-uri 'self'; form-action 'self'; frame-ancestors 'none'")
SECURITY_HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",  # frame-ancestors for browsers that predate CSP 2
    "Referrer-Policy": "same-origin",
}

csrf = CSRFProtect()
login_manager = LoginManager()


@dataclass(frozen=True, eq=False)
class Viewer(UserMixin):
    """The signed-in user as the pages need them, detached from any database session."""

    id: int
    email: str
    name: str
    role: Role
    timezone: str
    locale: str
    token: str

    @classmethod
    def of(cls, user: User) -> Viewer:
        return cls(user.id, user.email, user.name, user.role, user.timezone, user.locale, session_token(user))

    def get_id(self) -> str:
        # The session carries the token, not the bare id: a new password ends the old sessions.
        return self.token

    def at_least(self, role: Role | str) -> bool:
        """Return whether the user's role includes `role` (admin ⊇ ops ⊇ rep)."""
        return ROLE_RANK[self.role] >= ROLE_RANK[Role(role)]

    @property
    def sees_everyone(self) -> bool:
        """Ops and admins see every rep's leads and tasks; a rep only their own."""
        return self.at_least(Role.ops)


def init_app(app: Flask, runtime: Runtime) -> None:
    """Set up sessions, the sign-in gate, CSRF and the headers; call after every blueprint is registered."""
    secure = urlsplit(runtime.settings.web.base_url).scheme == "https"
    app.config.update(
        SESSION_COOKIE_HTTPONLY=True, SESSION_COOKIE_SAMESITE="Lax", SESSION_COOKIE_SECURE=secure,
        REMEMBER_COOKIE_HTTPONLY=True, REMEMBER_COOKIE_SAMESITE="Lax", REMEMBER_COOKIE_SECURE=secure,
        # A rep keeps a page open all day: the token lives as long as the session, not an hour.
        WTF_CSRF_TIME_LIMIT=None,
    )
    login_manager.init_app(app)
    login_manager.login_view = "auth.login"
    login_manager.session_protection = "basic"

    @login_manager.user_loader
    def load_user(token: str) -> Viewer | None:
        with runtime.session() as session:
            user = user_for_token(session, token)
            return Viewer.of(user) if user is not None else None

    # The gate runs before CSRF, so that a POST without a session is sent to sign in, not told about tokens.
    app.before_request(require_sign_in)
    csrf.init_app(app)
    for rule in app.url_map.iter_rules():
        if rule.rule.startswith(HOOKS_PREFIX) or rule.endpoint in CSRF_EXEMPT_ENDPOINTS:
            csrf.exempt(app.view_functions[rule.endpoint])
    app.register_error_handler(CSRFError, _csrf_failed)
    app.after_request(add_security_headers)


def is_public(endpoint: str, path: str) -> bool:
    """Return whether a route answers without signing in."""
    return endpoint in PUBLIC_ENDPOINTS or path.startswith(HOOKS_PREFIX)


def require_sign_in() -> Response | None:
    """Send a visitor without a session to /login?next=..., for every route that is not public."""
    rule = request.url_rule
    if rule is None or is_public(rule.endpoint, rule.rule) or current_user.is_authenticated:
        return None  # no route (Flask answers 404/405), a public one, or signed in
    # Only a page can be come back to; after a POST the form would be gone anyway.
    target = request.full_path.rstrip("?") if request.method in ("GET", "HEAD") else None
    return redirect(url_for("auth.login", next=target))


def safe_next(target: str | None) -> str | None:
    """Return `target` when it is a path on this site, else None: never a redirect to another host.

    Browsers read a backslash as a slash and drop tabs and newlines in URLs, so "/\\evil.example"
    or "/\\t/evil.example" would leave the site: any of those, like "//host" or a scheme, is refused.
    """
    if not target or not target.startswith("/") or target.startswith("//"):
        return None
    if "\\" in target or any(ord(c) < 0x21 or ord(c) == 0x7F for c in target):
        return None
    parts = urlsplit(target)
    return target if not parts.scheme and not parts.netloc else None


def add_security_headers(response: Response) -> Response:
    """Add the security headers to every response; a route that set a stricter one keeps it."""
    for name, value in SECURITY_HEADERS.items():
        response.headers.setdefault(name, value)
    # Webhooks come from providers without a session; reading one would only cost time.
    if not request.path.startswith(HOOKS_PREFIX) and current_user.is_authenticated:
        # Pages about leads must not stay in a shared computer's cache after signing out.
        response.headers.setdefault("Cache-Control", "no-store")
    return response


def viewer() -> Viewer:
    """Return the signed-in user (the gate has made sure there is one)."""
    return current_user._get_current_object()  # type: ignore[attr-defined, no-any-return]


F = TypeVar("F", bound=Callable[..., Any])


def requires(role: Role) -> Callable[[F], F]:
    """Answer 403 to a signed-in user whose role does not include `role`."""
    def decorate(view: F) -> F:
        @wraps(view)
        def guarded(*args: Any, **kwargs: Any) -> Any:
            if not viewer().at_least(role):
                abort(403)
            return view(*args, **kwargs)
        return guarded  # type: ignore[return-value]
    return decorate


def _csrf_failed(error: CSRFError) -> tuple[str, int]:
    return render_template("error.html", title="The form could not be sent",
                           message=f"{error.description} Reload the page and send the form again."), 400
