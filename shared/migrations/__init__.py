"""Versioned schema migrations (Alembic). Apply them with ``python -m shared.migrations``."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config

from shared.config import Settings, get_settings

_HERE = Path(__file__).resolve().parent


def alembic_config(settings: Settings | None = None) -> Config:
    """An Alembic configuration pointing at these migrations and ``settings``' database."""
    config = Config()
    config.set_main_option("script_location", str(_HERE))
    config.attributes["settings"] = settings or get_settings()
    return config


def upgrade(settings: Settings | None = None, revision: str = "head") -> None:
    """Bring the database of ``settings`` up to ``revision`` (default: the newest)."""
    command.upgrade(alembic_config(settings), revision)
