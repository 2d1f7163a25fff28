"""After-commit actions are best effort: their failure never undoes a committed answer, and a
dependency that went away meanwhile (it logs its own outage) is no error with a traceback."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
from sqlalchemy import text

from services.kit.errors import Unavailable
from services.kit.storage import Database
from services.points.tables import kit


def _failing_after_commit(tmp_path: Path, failure: Exception) -> int:
    db = Database(f"sqlite:///{tmp_path / 'a.db'}", service="points", kit=kit)

    def work(uow) -> int:
        uow.after_commit(lambda: (_ for _ in ()).throw(failure))
        return uow.conn.execute(text("SELECT 7")).scalar()

    try:
        return db.transact(work)
    finally:
        db.dispose()


def test_a_dependency_away_after_the_commit_is_logged_without_an_error(tmp_path: Path,
                                                                        caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="loyalty.storage"):
        away = Unavailable("the database is unreachable", reason="DATABASE_UNAVAILABLE")
        assert _failing_after_commit(tmp_path, away) == 7
    assert [r.levelno for r in caplog.records] == [logging.INFO]
    assert not any(r.exc_info for r in caplog.records)


def test_a_bug_in_an_after_commit_action_is_an_error_but_the_answer_stands(tmp_path: Path,
                                                                            caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="loyalty.storage"):
        assert _failing_after_commit(tmp_path, RuntimeError("boom")) == 7
    assert [r.levelno for r in caplog.records] == [logging.ERROR]
    assert caplog.records[0].exc_info is not None
