"""Alembic environment: where the URL comes from, and what the schema should be.

The URL, first found wins: ``Config.attributes["url"]`` (``app.store.migrate.upgrade``),
``alembic -x url=...``, the ini's ``sqlalchemy.url``, then the app's Settings. Migrations run
on a connection of :func:`app.store.db.make_engine`, so ``postgresql://`` URLs use psycopg 3 as
the app does. SQLite gets batch mode, since it can alter few things in place.
"""

from __future__ import annotations

from logging.config import fileConfig

from alembic import context
from sqlalchemy import pool

from app.store.db import make_engine
from app.store.models import Base

config = context.config
if config.config_file_name is not None and config.attributes.get("url") is None:
    fileConfig(config.config_file_name)  # the command line only; the app keeps its logging

target_metadata = Base.metadata


def database_url() -> str:
    """The URL to migrate (see the module docstring for the order)."""
    url = config.attributes.get("url") or context.get_x_argument(as_dictionary=True).get("url")
    url = url or config.get_main_option("sqlalchemy.url")
    if not url:
        from app.settings import get_settings

        url = get_settings().database_url
    return str(url)


def run_offline() -> None:
    """Write the SQL to stdout (``alembic upgrade head --sql``) without a database."""
    url = database_url()
    context.configure(
        url=url,
        target_metadata=target_metadata,
        literal_binds=True,
        render_as_batch=url.startswith("sqlite"),
    )
    with context.begin_transaction():
        context.run_migrations()


def run_online() -> None:
    """Migrate a live database in one transaction."""
    engine = make_engine(database_url(), poolclass=pool.NullPool)
    try:
        with engine.connect() as connection:
            context.configure(
                connection=connection,
                target_metadata=target_metadata,
                render_as_batch=connection.dialect.name == "sqlite",
                compare_type=True,
            )
            with context.begin_transaction():
                context.run_migrations()
    finally:
        engine.dispose()


if context.is_offline_mode():
    run_offline()
else:
    run_online()
