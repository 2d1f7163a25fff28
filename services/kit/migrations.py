"""Alembic, one migration history per service (each in services/<svc>/migrations, with its
own version table). Applied at start in the embedded default, by `migrate` in production."""

from __future__ import annotations

from pathlib import Path

from alembic import command, context
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import create_engine, text
from sqlalchemy.engine import Engine
from sqlalchemy.pool import NullPool

SERVICES_DIR = Path(__file__).resolve().parent.parent


def version_table(service: str) -> str:
    return f"alembic_version_{service}"


def alembic_config(service: str, url: str) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(SERVICES_DIR / service / "migrations"))
    cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    cfg.set_main_option("version_table", version_table(service))
    return cfg


def upgrade(service: str, url: str) -> None:
    if url.startswith("sqlite:///"):
        Path(url.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
    command.upgrade(alembic_config(service, url), "head")


def is_current(service: str, engine: Engine) -> bool:
    """Whether the database has every migration of the service (health waits for this)."""
    heads = set(ScriptDirectory.from_config(alembic_config(service, str(engine.url))).get_heads())
    with engine.connect() as conn:
        migration = MigrationContext.configure(conn, opts={"version_table": version_table(service)})
        return set(migration.get_current_heads()) == heads


def run_env() -> None:
    """The body of every service's migrations/env.py (online mode only)."""
    cfg = context.config
    url = cfg.get_main_option("sqlalchemy.url")
    table = cfg.get_main_option("version_table")
    engine = create_engine(url, poolclass=NullPool)
    with engine.connect() as conn:
        if engine.dialect.name == "postgresql":
            # Replicas starting together: one migrates, the others wait and find nothing to do.
            conn.execute(text("SELECT pg_advisory_xact_lock(hashtext(:name))"), {"name": table})
        context.configure(
            connection=conn, version_table=table, render_as_batch=engine.dialect.name == "sqlite"
        )
        with context.begin_transaction():
            context.run_migrations()
        conn.commit()
    engine.dispose()
