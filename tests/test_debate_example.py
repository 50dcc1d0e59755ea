"""``examples/debate``, a user's room installed as its own package, shows up everywhere a
built-in room does: the chat app, ``manyheads demo`` and ``manyheads generate room``."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from importlib.metadata import entry_points
from pathlib import Path

import pytest
from conftest import ROOT
from streamlit.testing.v1 import AppTest

from manyheads import get_room

APP = ROOT / "manyheads" / "ui" / "app.py"
SPEAKERS = {"Proposer", "Opposer", "Moderator"}


def test_it_registers_through_its_entry_point():
    [point] = [ep for ep in entry_points(group="manyheads.rooms") if ep.name == "debate"]
    assert point.value == "manyheads_debate:ROOM"
    assert get_room("debate").config.__module__ == "manyheads_debate"
    code = (ROOT / "examples/debate/manyheads_debate/__init__.py").read_text().splitlines()
    assert len([line for line in code if line.strip()]) <= 70  # stays a small example


@pytest.mark.slow
def test_it_runs_in_the_chat_app(tmp_path, monkeypatch):
    monkeypatch.setenv("MANYHEADS_DATABASE_URL", f"sqlite:///{tmp_path}/ui.db")
    app = AppTest.from_file(str(APP), default_timeout=600)
    app.run()
    assert "debate" in app.selectbox(key="room").options
    app.selectbox(key="room").select("debate").run()
    app.selectbox(key="engine").select("local").run()
    app.number_input(key="cfg-debate-max_tokens").set_value(16)
    app.run()
    app.chat_input[0].set_value("Homework should be optional.")
    app = app.run()
    assert not app.exception and not app.error
    assert SPEAKERS <= {message.name for message in app.chat_message}


def cli(*args: str, home: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "MANYHEADS_DATABASE_URL": f"sqlite:///{home}/cli.db"}
    return subprocess.run([sys.executable, "-m", "manyheads.cli", *args], capture_output=True,
                          text=True, timeout=900, env=env, cwd=ROOT)


@pytest.mark.slow
def test_it_runs_in_manyheads_demo_and_generate(tmp_path):
    done = cli("demo", "--room", "debate", "--engine", "local", "--set", "max_tokens=16",
               home=tmp_path)
    assert done.returncode == 0, done.stderr
    assert all(f"{name}:" in done.stdout for name in SPEAKERS)

    prompts = tmp_path / "motions.jsonl"
    prompts.write_text("\n".join(json.dumps({"prompt": p}) for p in
                                 ("Tea beats coffee.", "Bikes beat cars.")), encoding="utf-8")
    out = tmp_path / "data"
    done = cli("generate", "room", "debate", "--prompts", str(prompts), "--out", str(out),
               "--engine", "local", "--set", "max_tokens=16", home=tmp_path)
    assert done.returncode == 0, done.stderr
    rows = [json.loads(line) for line in (out / "debate.jsonl").read_text().splitlines()]
    assert [r["prompt"] for r in rows] == ["Tea beats coffee.", "Bikes beat cars."]
    assert all({m["speaker"] for m in r["messages"]} >= SPEAKERS for r in rows)
