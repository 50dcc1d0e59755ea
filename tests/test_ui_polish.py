"""What a newcomer sees in the chat app before sending anything: no emoji needed, a note on
the embedded model, and a terminal that stays quiet."""

from __future__ import annotations

import io
from pathlib import Path

from PIL import Image
from streamlit.testing.v1 import AppTest

from manyheads.ui.render import avatar

APP = Path(__file__).resolve().parent.parent / "manyheads" / "ui" / "app.py"


def test_avatars_are_drawn_initials_not_emoji():
    image = Image.open(io.BytesIO(avatar("Confucian Scholar")))
    assert image.format == "PNG" and image.size == (64, 64)
    assert avatar("Ada") == avatar("Ada") and avatar("Ada") != avatar("Basil")
    pages = [*APP.parent.glob("*.py"), APP.parent.parent / "cli" / "main.py"]
    emoji = [(p.name, ch) for p in pages for ch in p.read_text(encoding="utf-8")
             if ord(ch) >= 0x1F000 or 0x2600 <= ord(ch) <= 0x27BF]
    assert not emoji


def test_the_embedded_model_note_says_how_to_switch(tmp_path, monkeypatch):
    monkeypatch.setenv("MANYHEADS_DATABASE_URL", f"sqlite:///{tmp_path}/ui.db")
    app = AppTest.from_file(str(APP), default_timeout=120)
    app.run()
    note = " ".join(c.value for c in app.caption)
    assert "SmolLM2-135M" in note and "MANYHEADS_ENGINE=openai" in note


def test_ui_command_turns_the_file_watcher_off():
    source = (APP.parent.parent / "cli" / "main.py").read_text(encoding="utf-8")
    assert '"--server.fileWatcherType", "none"' in source
