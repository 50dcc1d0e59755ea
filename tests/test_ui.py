"""The chat app in Streamlit's AppTest (the real script, real local engine, real SQLite)."""

from __future__ import annotations

from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

APP = Path(__file__).resolve().parent.parent / "manyheads" / "ui" / "app.py"
TIMEOUT = 600


@pytest.fixture
def db_url(tmp_path, monkeypatch) -> str:
    url = f"sqlite:///{tmp_path}/ui.db"
    monkeypatch.setenv("MANYHEADS_DATABASE_URL", url)
    return url


def open_app(room: str, **config: object) -> AppTest:
    app = AppTest.from_file(str(APP), default_timeout=TIMEOUT)
    app.run()
    app.selectbox(key="room").select(room).run()
    app.selectbox(key="engine").select("local").run()
    for name, value in config.items():
        widget = f"cfg-{room}-{name}"
        if isinstance(value, bool):
            app.toggle(key=widget).set_value(value)
        else:
            app.number_input(key=widget).set_value(value)
    return app.run()


def send(app: AppTest, text: str) -> AppTest:
    app.chat_input[0].set_value(text)
    app = app.run()
    assert not app.exception, app.exception
    assert not app.error, [e.value for e in app.error]
    return app


def chat_names(app: AppTest) -> list[str]:
    return [message.name for message in app.chat_message]


def page_text(app: AppTest) -> str:
    return "\n".join(m.value for m in app.markdown)


def test_demo_room_streams_agents_and_reopens_from_the_database(db_url):
    app = send(open_app("demo", max_tokens=12), "tea gardens in the rain")
    names = chat_names(app)
    assert names[0] == "user" and {"Ada", "Basil"} <= set(names)
    picked = app.selectbox(key="pick-demo").value
    assert picked != "new"  # the new session is selected after the turn
    stats = next(e for e in app.expander if e.label == "decoding stats").json[0].value
    assert '"streamed chunks"' in stats and '"engine seconds"' in stats

    later = AppTest.from_file(str(APP), default_timeout=TIMEOUT)  # a browser tab opened later
    later.run()
    later.selectbox(key="room").select("demo").run()
    later.selectbox(key="pick-demo").select(picked).run()
    assert chat_names(later) == names
    assert "tea gardens in the rain" in page_text(later)
    assert len(later.get("download_button")) == 2  # JSON and Markdown export

    later = send(later, "What grows best?")  # continues the same session
    assert later.selectbox(key="pick-demo").value == picked
    assert chat_names(later)[len(names)] == "user" and len(later.chat_message) > len(names) + 1


def test_user_html_is_shown_as_text_not_markup(db_url):
    app = send(open_app("demo", max_tokens=8, turns=1), "<script>alert(1)</script><b>hi</b>")
    shown = page_text(app)
    assert "&lt;script&gt;alert(1)&lt;/script&gt;&lt;b&gt;hi&lt;/b&gt;" in shown
    assert "<script>" not in shown


def test_delete_session_removes_it_from_the_list(db_url):
    app = send(open_app("demo", max_tokens=8, turns=1), "kites")
    picked = app.selectbox(key="pick-demo").value
    app.button[0].click().run()  # the only button: "Delete session"
    assert picked not in app.selectbox(key="pick-demo").options
    assert app.selectbox(key="pick-demo").value == "new"


def test_persuasion_observer_view_reveals_hidden_state(db_url):
    app = send(open_app("persuasion", max_turns=1, max_tokens=16, tom_max_tokens=64),
               "recycling at the office")
    public = chat_names(app)
    assert "Hidden state" not in public and "Scene" in public
    app.toggle(key="observer").set_value(True).run()
    assert "Hidden state" in chat_names(app)
    assert len(app.chat_message) > len(public)


def test_spp_room_shows_personas_rounds_and_step_scores(db_url):
    app = open_app("spp", max_rounds=1, max_tokens=24, note_tokens=16)
    app.toggle(key="verify").set_value(True).run()
    app = send(app, "Name three fruits that are red.")
    names = chat_names(app)
    assert names.count("AI Assistant") >= 2  # participants line, draft, final
    assert "critique" in page_text(app)
    scored = [m for m in app.markdown if "UHead score" in m.value]
    assert scored, "the draft's steps are coloured by their UHead scores"


def test_multiplex_panel_shows_each_perspective_and_the_pds_chart(db_url):
    app = send(open_app("multiplex", max_tokens=24, member_tokens=16),
               "Why do people keep old family recipes?")
    names = chat_names(app)
    assert "Synthesizer" in names and len(set(names)) >= 8  # you, 6+ members, synthesizer
    assert any("PDS entropy" in caption.value for caption in app.caption)


def test_studio_shows_the_picture_its_layout_and_subjects(db_url):
    app = send(open_app("studio", max_rounds=0, max_tokens=96),
               "A red ball lies next to a small dog.")
    assert "Drawer" in chat_names(app)
    assert app.get("image"), "the turn's picture is on the page"
    assert {"subject database", "layout boxes"} <= {e.label for e in app.expander}
