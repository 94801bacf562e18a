"""The one settings object: defaults, GIFTFLOW_* variables, command-line overrides, validation."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from pydantic import ValidationError

from giftflow.bootstrap import build_ledger, group_commit_settings
from giftflow.settings import Settings


def test_default_is_sqlite_inside_the_data_directory(tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """Without a database URL the store is giftflow.sqlite3 in the data directory."""
    monkeypatch.delenv("GIFTFLOW_DATABASE_URL", raising=False)
    settings = Settings(data_dir=tmp_path / "data")
    assert settings.resolved_database_url == f"sqlite:///{tmp_path / 'data' / 'giftflow.sqlite3'}"
    assert settings.sqlite_synchronous == "FULL"


def test_environment_variables_set_limits(monkeypatch: pytest.MonkeyPatch) -> None:
    """GIFTFLOW_* variables reach the settings, and the wiring hands them to the ledger."""
    monkeypatch.setenv("GIFTFLOW_GROUP_COMMIT_BATCH_OPERATIONS_MAX", "250")
    monkeypatch.setenv("GIFTFLOW_GROUP_COMMIT_WINDOW_US", "5500")
    monkeypatch.setenv("GIFTFLOW_HISTORY_PAGE_ENTRIES_MAX", "40")
    settings = Settings()
    bounds = group_commit_settings(settings)
    assert (bounds.batch_operations_max, bounds.window_us) == (250, 5_500)

    class _NoStore:
        def now_ms(self) -> int:
            return 0

    ledger = build_ledger(settings, store=_NoStore())  # type: ignore[arg-type]
    assert ledger.limits.batch_operations_max == 250
    assert ledger.limits.history_page_entries_max == 40


def test_out_of_range_limit_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    """A limit outside its range is a validation error naming the setting."""
    monkeypatch.setenv("GIFTFLOW_GROUP_COMMIT_BATCH_OPERATIONS_MAX", "0")
    with pytest.raises(ValidationError, match="group_commit_batch_operations_max"):
        Settings()


def test_cli_reports_a_bad_setting_in_one_line(tmp_path: Path) -> None:
    """A bad GIFTFLOW_* value makes the CLI print one line naming it and exit 2, no traceback."""
    env = {"PATH": "/usr/bin:/bin", "GIFTFLOW_SQLITE_SYNCHRONOUS": "OFF"}
    result = subprocess.run([sys.executable, "-m", "giftflow", "migrate", "--data-dir",
                             str(tmp_path)], capture_output=True, text=True, env=env,
                            timeout=60, check=False)
    assert result.returncode == 2
    assert "sqlite_synchronous" in result.stderr
    assert "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
