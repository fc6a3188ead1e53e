"""Create or update the transcoder's read-only database role: SELECT on `tasks`,
`clips` and `task_parts`, nothing else.

The design lets the transcoder read a task's status (has it been canceled?), to resume
a task which of its clips are already recorded, and how many attempts each part of a
task made across the fleet has had, but never write the database. Cloud SQL users created through its API join `cloudsqlsuperuser`, so
this role is made with plain SQL instead, by the application's owner role, after the
migrations (cloudbuild.yaml, step `db-roles`). Idempotent: every run converges the role.

The password is sent as a SCRAM-SHA-256 verifier computed here, so the plain password
never appears in a statement that pgAudit or the server log could record.

    TRANSCODER_DB_PASSWORD=... python infra/terraform/scripts/db_roles.py [--role transcoder]

Connection settings are the services' own (INSTANCE_CONNECTION_NAME, DB_USER, DB_NAME,
DB_PASSWORD, or DATABASE_URL), read by shared.config.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import hmac
import os
import re
import secrets
import sys

from sqlalchemy import text
from sqlalchemy.engine import Connection

READABLE_TABLES = ("clips", "task_parts", "tasks")
SCRAM_ITERATIONS = 4096
_IDENTIFIER = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")


def scram_sha256_verifier(
    password: str, salt: bytes | None = None, iterations: int = SCRAM_ITERATIONS
) -> str:
    """The verifier PostgreSQL stores for `password` (RFC 5802/7677, as libpq computes it)."""
    salt = salt if salt is not None else secrets.token_bytes(16)
    salted = hashlib.pbkdf2_hmac("sha256", password.encode("utf-8"), salt, iterations)
    client_key = hmac.new(salted, b"Client Key", hashlib.sha256).digest()
    stored_key = hashlib.sha256(client_key).digest()
    server_key = hmac.new(salted, b"Server Key", hashlib.sha256).digest()

    def b64(raw: bytes) -> str:
        return base64.b64encode(raw).decode("ascii")

    return f"SCRAM-SHA-256${iterations}:{b64(salt)}${b64(stored_key)}:{b64(server_key)}"


def apply_read_only_role(
    connection: Connection, role: str, verifier: str, tables: tuple[str, ...] = READABLE_TABLES
) -> None:
    """Make `role` a login role that can SELECT `tables` in the current database and nothing else."""
    for name in (role, *tables):
        if not _IDENTIFIER.match(name):
            raise ValueError(f"not a plain lower-case identifier: {name!r}")
    if not re.fullmatch(r"SCRAM-SHA-256\$\d+:[A-Za-z0-9+/=]+\$[A-Za-z0-9+/=]+:[A-Za-z0-9+/=]+", verifier):
        raise ValueError("not a SCRAM-SHA-256 verifier")

    exists = connection.execute(text("SELECT 1 FROM pg_roles WHERE rolname = :role"), {"role": role}).first()
    if not exists:
        connection.execute(text(f'CREATE ROLE "{role}"'))
    # Identifiers and the verifier are checked above: DDL takes no bound parameters. The
    # verifier's colons are escaped so text() does not read them as parameter names.
    literal = verifier.replace(":", "\\:")
    connection.execute(
        text(
            f'ALTER ROLE "{role}" WITH LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION '
            f"NOINHERIT CONNECTION LIMIT 100 PASSWORD '{literal}'"
        )
    )
    connection.execute(text(f'ALTER ROLE "{role}" SET default_transaction_read_only = on'))

    database = connection.execute(text("SELECT current_database()")).scalar_one()
    connection.execute(text(f'GRANT CONNECT ON DATABASE "{database}" TO "{role}"'))
    connection.execute(text(f'GRANT USAGE ON SCHEMA public TO "{role}"'))
    # Converge: whatever was granted before on other tables goes away.
    connection.execute(text(f'REVOKE ALL ON ALL TABLES IN SCHEMA public FROM "{role}"'))
    connection.execute(text(f'REVOKE ALL ON ALL SEQUENCES IN SCHEMA public FROM "{role}"'))
    for table in tables:
        connection.execute(text(f'GRANT SELECT ON TABLE public."{table}" TO "{role}"'))


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--role", default="transcoder")
    parser.add_argument(
        "--password-env",
        default="TRANSCODER_DB_PASSWORD",
        help="environment variable holding the role's password",
    )
    args = parser.parse_args(argv)
    password = os.environ.get(args.password_env)
    if not password:
        raise SystemExit(f"{args.password_env} is not set")

    from shared.config import get_settings
    from shared.db import create_engine

    engine = create_engine(get_settings())
    try:
        with engine.begin() as connection:
            apply_read_only_role(connection, args.role, scram_sha256_verifier(password))
    finally:
        engine.dispose()
    print(f"role {args.role}: SELECT on {', '.join(READABLE_TABLES)} only")


if __name__ == "__main__":
    main(sys.argv[1:])
