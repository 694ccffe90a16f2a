"""Running the Alembic migrations from code: the app at start-up and the tests use this.

The schema is only ever made by ``alembic upgrade head`` (never ``create_all``), so the
database a test sees is the one production gets.
"""

from __future__ import annotations

from pathlib import Path
from typing import Final

from alembic import command
from alembic.config import Config

MIGRATIONS_DIR: Final = Path(__file__).resolve().parents[2] / "migrations"
"""The Alembic script folder (``migrations/`` at the repository root)."""


def alembic_config(url: str) -> Config:
    """An Alembic configuration for ``url`` that needs no ``alembic.ini``.

    The URL travels in ``Config.attributes`` (not the ini's ``sqlalchemy.url``), so characters
    like ``%`` need no escaping, and no logging configuration is loaded over the app's own.
    """
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    config.attributes["url"] = url
    return config


def upgrade(url: str, revision: str = "head") -> None:
    """Bring the database at ``url`` up to ``revision`` (all migrations by default)."""
    command.upgrade(alembic_config(url), revision)


def downgrade(url: str, revision: str = "base") -> None:
    """Take the database at ``url`` down to ``revision`` (an empty schema by default)."""
    command.downgrade(alembic_config(url), revision)


if __name__ == "__main__":  # ``python -m app.store.migrate``: the store of IE_DATABASE_URL
    from app.settings import get_settings

    upgrade(get_settings().database_url)
