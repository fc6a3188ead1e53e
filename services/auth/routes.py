"""``/auth/signup``, ``/auth/login``, ``/auth/logout``, ``/auth/password`` and
``/auth/.well-known/jwks.json``."""

from __future__ import annotations

import re
import uuid
from datetime import UTC, datetime
from typing import Annotated

from flask import Blueprint, current_app, request
from pydantic import BaseModel, ConfigDict, StringConstraints, model_validator
from sqlalchemy import BindParameter, bindparam, func, insert, select, update
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError

from services.auth import deps, throttle
from services.auth.passwords import hash_password, verify_password
from shared import ratelimit, sessions
from shared.errors import Conflict, Unauthorized
from shared.tables import users
from shared.tokens import InvalidToken, add_bearer_challenge, bearer_token, issue_token
from shared.web import json_body

auth = Blueprint("auth", __name__, url_prefix="/auth")

Username = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9_.-]{3,32}$")]
Email = Annotated[
    str,
    StringConstraints(
        max_length=254, pattern=r"^[A-Za-z0-9.!#$%&'*+/=?^_`{|}~-]+@[A-Za-z0-9-]+(\.[A-Za-z0-9-]+)+$"
    ),
]
Password = Annotated[str, StringConstraints(min_length=8, max_length=128)]


def _check_password_policy(password: str, repeated: str, *, name: str = "password") -> None:
    """The sign-up password policy: at least 8 characters (the field's own rule), an
    upper-case letter, a lower-case letter and a digit, typed the same twice."""
    missing = [
        rule
        for rule, pattern in (
            ("an upper-case letter", "[A-Z]"),
            ("a lower-case letter", "[a-z]"),
            ("a digit", "[0-9]"),
        )
        if not re.search(pattern, password)
    ]
    if missing:
        raise ValueError(f"{name} needs " + ", ".join(missing))
    if password != repeated:
        raise ValueError(f"{name} and {name}_2 differ")


class SignupRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    username: Username
    email: Email
    password: Password
    password_2: Annotated[str, StringConstraints(max_length=128)]

    @model_validator(mode="after")
    def _password_policy(self) -> SignupRequest:
        _check_password_policy(self.password, self.password_2)
        return self


class PasswordChange(BaseModel):
    model_config = ConfigDict(extra="forbid")

    current_password: Annotated[str, StringConstraints(min_length=1, max_length=128)]
    new_password: Password
    new_password_2: Annotated[str, StringConstraints(max_length=128)]

    @model_validator(mode="after")
    def _password_policy(self) -> PasswordChange:
        _check_password_policy(self.new_password, self.new_password_2, name="new_password")
        if self.new_password == self.current_password:
            raise ValueError("new_password must differ from current_password")
        return self


class LoginRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    email: Annotated[str, StringConstraints(min_length=1, max_length=254)] | None = None
    username: Annotated[str, StringConstraints(min_length=1, max_length=254)] | None = None
    password: Annotated[str, StringConstraints(min_length=1, max_length=128)]

    @model_validator(mode="after")
    def _one_identifier(self) -> LoginRequest:
        if not (self.email or self.username):
            raise ValueError("send email (or username) and password")
        return self

    @property
    def identifier(self) -> str:
        return (self.email or self.username or "").lower()


_INSERT_USER = insert(users).returning(users.c.id, users.c.username, users.c.email, users.c.created_at)
# Usernames and emails are unique regardless of case (the lower() indexes of users).
_IDENTIFIER: BindParameter[str] = bindparam("identifier")
_EMAIL_MATCHES = func.lower(users.c.email) == _IDENTIFIER
_FIND_USER = (
    select(users.c.id, users.c.password_hash)
    .where(_EMAIL_MATCHES | (func.lower(users.c.username) == _IDENTIFIER))
    .order_by(_EMAIL_MATCHES.desc())
    .limit(1)
)
_PASSWORD_HASH = select(users.c.password_hash).where(users.c.id == bindparam("id"))
_SET_PASSWORD = update(users).where(users.c.id == bindparam("user_id"))
_SAME_USERNAME = func.lower(users.c.username) == func.lower(bindparam("username"))
_EXISTING = (
    select(_SAME_USERNAME.label("same_username"))
    .where(_SAME_USERNAME | (func.lower(users.c.email) == func.lower(bindparam("email"))))
    .limit(1)
)


@auth.post("/signup")
def signup():
    settings = deps.settings()
    engine = deps.engine()
    ratelimit.hit(
        engine,
        f"signup:client:{request.remote_addr}",
        settings.signups_per_minute_per_client,
        message="too many sign-ups, slow down",
    )
    body = json_body(SignupRequest, max_bytes=settings.max_request_json_bytes)
    password_hash = hash_password(body.password)
    try:
        with engine.begin() as conn:
            row = conn.execute(
                _INSERT_USER.values(username=body.username, email=body.email, password_hash=password_hash)
            ).one()
    except IntegrityError:
        with engine.connect() as conn:
            clash = conn.execute(_EXISTING, {"username": body.username, "email": body.email}).first()
        what = "username" if clash is None or clash.same_username else "email"
        raise Conflict(f"that {what} is already registered", code=f"{what}_taken") from None
    return {
        "id": str(row.id),
        "username": row.username,
        "email": row.email,
        "created_at": row.created_at.isoformat(),
    }, 201


@auth.post("/login")
def login():
    settings = deps.settings()
    engine = deps.engine()
    body = json_body(LoginRequest, max_bytes=settings.max_request_json_bytes)
    with engine.connect() as conn:
        user = conn.execute(_FIND_USER, {"identifier": body.identifier}).first()
    # Email and username of one account share its counters; a name no account has is
    # counted as typed, exactly like an account, so the limits reveal nothing.
    account = str(user.id) if user else f"name:{body.identifier}"
    attempt = throttle.begin(
        engine, account=account, address=request.remote_addr, limit=settings.login_failures_per_minute
    )
    # The password is checked (or a dummy hash computed) whether the account exists or not.
    verified = verify_password(user.password_hash if user else None, body.password)
    if user is None or not verified:
        # The same answer for an unknown account and a wrong password.
        raise Unauthorized("wrong credentials", code="invalid_credentials")
    throttle.succeeded(engine, attempt)

    token = issue_token(deps.signing_key(), settings, str(user.id))
    return {"token": token, "token_type": "Bearer", "expires_in": settings.token_ttl_seconds}


_BEARER_ROUTES = {"auth.logout", "auth.change_password"}


@auth.after_request
def _bearer_challenge(response):
    return add_bearer_challenge(response) if request.endpoint in _BEARER_ROUTES else response


def _token_user() -> tuple[uuid.UUID, Engine]:
    """The user whose live token the request carries (401 otherwise)."""
    engine = deps.engine()
    claims = deps.token_verifier().verify(bearer_token(request.headers.get("Authorization")))
    try:
        user_id = uuid.UUID(str(claims["sub"]))
    except ValueError:
        raise InvalidToken("the token does not name a user") from None
    with engine.connect() as conn:
        sessions.require_live_session(conn, user_id, claims)
    return user_id, engine


@auth.post("/logout")
def logout():
    """End every token of the caller issued before now, this one included."""
    user_id, engine = _token_user()
    with engine.begin() as conn:
        sessions.end_sessions(conn, user_id, datetime.now(UTC))
    return "", 204


@auth.post("/password")
def change_password():
    """Replace the caller's password (the current one proves it is the owner) and end
    every token issued before now."""
    settings = deps.settings()
    user_id, engine = _token_user()
    body = json_body(PasswordChange, max_bytes=settings.max_request_json_bytes)
    # A stolen token must not become a way around the login limits.
    attempt = throttle.begin(
        engine, account=str(user_id), address=request.remote_addr, limit=settings.login_failures_per_minute
    )
    with engine.connect() as conn:
        password_hash = conn.execute(_PASSWORD_HASH, {"id": user_id}).scalar_one()
    if not verify_password(password_hash, body.current_password):
        raise Unauthorized("the current password is wrong", code="invalid_credentials")
    throttle.succeeded(engine, attempt)
    new_hash = hash_password(body.new_password)
    with engine.begin() as conn:
        conn.execute(_SET_PASSWORD.values(password_hash=new_hash), {"user_id": user_id})
        sessions.end_sessions(conn, user_id, datetime.now(UTC))
    return "", 204


@auth.get("/.well-known/jwks.json")
def jwks():
    settings = deps.settings()
    response = current_app.json.response(deps.jwks())
    # The api's own cache time, so a client that honours the header keeps a dropped key
    # no longer than the api does (docs/deploy.md, "A leaked key").
    response.headers["Cache-Control"] = f"public, max-age={settings.jwks_cache_seconds}"
    return response
