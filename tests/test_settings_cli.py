"""Settings and the command line, run as a user would run them."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from manyheads.errors import ConfigError
from manyheads.models import make_engine
from manyheads.settings import get_settings
from manyheads.storage import Store


def manyheads(*args: str, env: dict[str, str] | None = None, timeout: int = 600):
    return subprocess.run([sys.executable, "-m", "manyheads.cli", *args], capture_output=True,
                          text=True, timeout=timeout,
                          env={**os.environ, "COLUMNS": "250", **(env or {})})


def test_unknown_engine_is_a_clear_error(monkeypatch):
    with pytest.raises(ConfigError, match="unknown engine 'nope'"):
        make_engine("nope")
    monkeypatch.setenv("MANYHEADS_ENGINE", "tpu")
    with pytest.raises(ConfigError, match="MANYHEADS_ENGINE"):
        get_settings()


def test_cli_reports_user_errors_in_one_line():
    result = manyheads("chat", "hello", "--engine", "nope")
    assert result.returncode == 2
    assert "unknown engine 'nope'" in result.stderr
    assert "Traceback" not in result.stderr


def test_models_command_shows_the_converted_folder():
    result = manyheads("models")
    assert result.returncode == 0, result.stderr
    assert "SmolLM2-135M-Instruct.Q4_1.gguf" in result.stdout


@pytest.mark.slow
def test_demo_stores_its_transcript_and_resume_needs_an_interrupted_turn(tmp_path: Path):
    env = {"MANYHEADS_DATABASE_URL": f"sqlite:///{tmp_path / 'demo.db'}"}
    first = manyheads("demo", "--room", "demo", "--engine", "local", "--message",
                      "tea gardens in the rain", "--set", "turns=3", "--set", "max_tokens=16",
                      env=env)
    assert first.returncode == 0, first.stderr
    session_id = first.stdout.split("stored as session")[1].split()[0]
    # The session's only turn finished: there is nothing to resume, and it says so.
    second = manyheads("demo", "--engine", "local", "--resume", session_id, env=env)
    assert second.returncode == 2
    assert "no interrupted turn to resume" in second.stderr
    assert "Traceback" not in second.stderr
    with Store.open(env["MANYHEADS_DATABASE_URL"]) as store:
        session = store.load(session_id)
        assert session.room == "demo" and session.status == "completed"
        assert session.config["turns"] == 3  # --set went into the stored room config
        assert [m.seq for m in session.messages] == [1, 2, 3, 4]
        assert [m.participant for m in session.messages] == ["you", "Ada", "Basil", "Ada"]
        assert session.messages[0].content == "tea gardens in the rain"
        assert [m.idempotency_key for m in session.messages] == [
            "user-0", "said-0", "said-1", "said-2"]
        assert all(m.content.strip() for m in session.messages)


def test_demo_rejects_a_bad_room_setting_in_one_line(tmp_path: Path):
    env = {"MANYHEADS_DATABASE_URL": f"sqlite:///{tmp_path / 'demo.db'}"}
    result = manyheads("demo", "--room", "demo", "--engine", "nope", "--set", "turns", env=env)
    assert result.returncode == 2
    assert "expected key=value" in result.stderr and "Traceback" not in result.stderr
