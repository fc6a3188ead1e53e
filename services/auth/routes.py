"""``/auth/signup``, ``/auth/login`` and ``/auth/.well-known/jwks.json``."""

from __future__ import annotations

import re
from typing import Annotated

from flask import Blueprint, current_app, request
from pydantic import BaseModel, ConfigDict, StringConstraints, model_validator
from sqlalchemy import text
from sqlalchemy.exc import IntegrityError

from services.auth import throttle
from services.auth.passwords import hash_password, verify_password
from shared import ratelimit
from shared.errors import Conflict, Unauthorized
from shared.tokens import issue_token
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


class SignupRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    username: Username
    email: Email
    password: Password
    password_2: Annotated[str, StringConstraints(max_length=128)]

    @model_validator(mode="after")
    def _password_policy(self) -> SignupRequest:
        missing = [
            rule
            for rule, pattern in (
                ("an upper-case letter", "[A-Z]"),
                ("a lower-case letter", "[a-z]"),
                ("a digit", "[0-9]"),
            )
            if not re.search(pattern, self.password)
        ]
        if missing:
            raise ValueError("password needs " + ", ".join(missing))
        if self.password != self.password_2:
            raise ValueError("password and password_2 differ")
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


_INSERT_USER = text(
    """
    INSERT INTO users (username, email, password_hash)
    VALUES (:username, :email, :password_hash)
    RETURNING id, username, email, created_at
    """
)
_FIND_USER = text(
    """
    SELECT id, password_hash FROM users
    WHERE lower(email) = :identifier OR lower(username) = :identifier
    ORDER BY (lower(email) = :identifier) DESC
    LIMIT 1
    """
)
_EXISTING = text(
    """
    SELECT lower(username) = lower(:username) AS same_username
    FROM users WHERE lower(username) = lower(:username) OR lower(email) = lower(:email)
    LIMIT 1
    """
)


@auth.post("/signup")
def signup():
    settings = current_app.extensions["settings"]
    engine = current_app.extensions["engine"]
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
                _INSERT_USER,
                {"username": body.username, "email": body.email, "password_hash": password_hash},
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
    settings = current_app.extensions["settings"]
    engine = current_app.extensions["engine"]
    body = json_body(LoginRequest, max_bytes=settings.max_request_json_bytes)
    with engine.connect() as conn:
        user = conn.execute(_FIND_USER, {"identifier": body.identifier}).first()
    # Email and username of one account share its counters; a name no account has is
    # counted as typed, exactly like an account, so the limits reveal nothing.
    account = str(user.id) if user else f"name:{body.identifier}"
    attempt = throttle.begin(
        engine, account=account, address=request.remote_addr, limit=settings.login_failures_per_minute
    )
    if not verify_password(user.password_hash if user else None, body.password):
        # The same answer for an unknown account and a wrong password.
        raise Unauthorized("wrong credentials", code="invalid_credentials")
    throttle.succeeded(engine, attempt)

    token = issue_token(current_app.extensions["signing_key"], settings, str(user.id))
    return {"token": token, "token_type": "Bearer", "expires_in": settings.token_ttl_seconds}


@auth.get("/.well-known/jwks.json")
def jwks():
    settings = current_app.extensions["settings"]
    response = current_app.json.response(current_app.extensions["jwks"])
    # The api's own cache time, so a client that honours the header keeps a dropped key
    # no longer than the api does (docs/deploy.md, "A leaked key").
    response.headers["Cache-Control"] = f"public, max-age={settings.jwks_cache_seconds}"
    return response
