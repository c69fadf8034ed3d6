"""/login and /logout: email and password, a generic error, and a limit on failures counted in the database."""
from __future__ import annotations

from flask import Blueprint, Response, make_response, redirect, render_template, request, session, url_for
from flask.typing import ResponseReturnValue
from flask_login import current_user, login_user, logout_user
from flask_wtf import FlaskForm
from wtforms import EmailField, PasswordField
from wtforms.validators import DataRequired, Length

from sequencer import audit
from sequencer.users import MAX_PASSWORD_LENGTH, TooManyFailures, authenticate
from sequencer.web import get_runtime
from sequencer.web.security import Viewer, safe_next

bp = Blueprint("auth", __name__)

# The same words whatever was wrong, so the page does not tell which addresses have an account.
WRONG = "Wrong email or password."


class LoginForm(FlaskForm):
    email = EmailField("Email", validators=[DataRequired("Enter your email address."), Length(max=320)])
    password = PasswordField("Password", validators=[DataRequired("Enter your password."),
                                                     Length(max=MAX_PASSWORD_LENGTH)])


@bp.route("/login", methods=["GET", "POST"])
def login() -> ResponseReturnValue:
    """Show the sign-in form; on a right email and password, go on to `next` (a path on this site) or Today."""
    target = safe_next(request.args.get("next"))
    if current_user.is_authenticated:
        return redirect(target or url_for("today.today"))
    form = LoginForm()
    if request.method == "GET":
        return _page(form, target, 200)
    if not form.validate():
        return _page(form, target, 400)
    runtime = get_runtime()
    with runtime.session() as db:
        try:
            user = authenticate(db, form.email.data, form.password.data, now=runtime.now())
        except TooManyFailures as exc:
            form.form_errors.append(f"Too many failed sign-ins for this address. Try again in "
                                    f"{max(1, round(exc.retry_after / 60))} min.")
            response = _page(form, target, 429)
            response.headers["Retry-After"] = str(exc.retry_after)
            return response
        if user is None:
            form.form_errors.append(WRONG)
            return _page(form, target, 401)
        audit.record(db, actor=user.email, action="user.sign_in", object_type="user", object_id=user.id,
                     at=runtime.now(), address=request.remote_addr)
        signed_in = Viewer.of(user)
    # A fresh session for the signed-in user: nothing from before signing in carries over.
    session.clear()
    login_user(signed_in)
    return redirect(target or url_for("today.today"))


@bp.post("/logout")
def logout() -> ResponseReturnValue:
    """Sign out (POST only, with the CSRF token, so another site cannot sign anyone out)."""
    logout_user()
    session.clear()
    return redirect(url_for("auth.login"))


def _page(form: LoginForm, target: str | None, status: int) -> Response:
    return make_response(render_template("login.html", form=form, next=target), status)
