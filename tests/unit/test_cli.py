"""The ``ecg-monitor`` command line: every command documents itself."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from stream.cli import app

runner = CliRunner()


@pytest.mark.parametrize("command", ["up", "worker", "replay", "alerts", "bench"])
def test_every_command_has_help(command: str) -> None:
    result = runner.invoke(app, [command, "--help"])
    assert result.exit_code == 0, result.output
    assert "Usage" in result.output and len(result.output) > 200


def test_top_level_help_lists_commands() -> None:
    result = runner.invoke(app, ["--help"])
    assert result.exit_code == 0
    for command in ("up", "worker", "replay", "alerts", "bench"):
        assert command in result.output


def test_replay_without_broker_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("ECG_KAFKA_BOOTSTRAP", raising=False)
    result = runner.invoke(app, ["replay", "--patients", "1"])
    assert result.exit_code != 0
    assert "ECG_KAFKA_BOOTSTRAP" in result.output
