"""The manyheads chat app: pick a room, talk to its agents, reopen any stored session.

Run it with ``manyheads ui``. The page holds no room logic: it lists rooms from the registry,
calls a room's ``converse`` on a worker thread, and draws what the room stores. Engines and the
store are cached per process; everything about a conversation lives in the store, so two
browser tabs share nothing but what they both read from it.
"""

from __future__ import annotations

import dataclasses
import time
import typing
from typing import Any

import streamlit as st

from manyheads.errors import ManyheadsError
from manyheads.models import Engine, make_engine
from manyheads.models.engine import Tally
from manyheads.models.local.decoders import DECODERS
from manyheads.models.local.decoders import label as decoder_label
from manyheads.orchestration.contract import Room
from manyheads.orchestration.conversation import ChatOptions
from manyheads.orchestration.registry import discover
from manyheads.settings import DEFAULT_MODEL, get_settings
from manyheads.storage import Store
from manyheads.ui import render
from manyheads.ui.runner import Turn

ENGINES = {"local": "embedded local (PyTorch)", "vllm": "vLLM (in process)",
           "openai": "OpenAI-compatible URL"}
NEW = "new"
FIRST_ROOM = "demo"  # what a newcomer sees first
EMBEDDED_NOTE = (
    "The embedded model is SmolLM2-135M-Instruct: small enough for any CPU, good for trying "
    "the rooms, weak at answering. For real answers choose *OpenAI-compatible URL* with a "
    "stronger model (e.g. `vllm serve Qwen/Qwen2.5-7B-Instruct`), or start the app with "
    "`MANYHEADS_ENGINE=openai MANYHEADS_BASE_URL=... MANYHEADS_MODEL=...`.")


@st.cache_resource(show_spinner="starting the engine...")
def load_engine(kind: str, model: str, base_url: str, decoder: str) -> Engine:
    """One engine per choice, shared by every browser session of this process."""
    settings = get_settings(base_url=base_url) if base_url else get_settings()
    options = {"decoder": decoder} if kind == "local" else {}
    return make_engine(kind, model, settings=settings, **options)


@st.cache_resource
def load_store() -> Store:
    return Store.open()


def chat_rooms() -> dict[str, Room]:
    """Every room that loaded; a plug-in that did not is named in a warning, not a crash."""
    found, errors = discover()
    for problem in errors:
        st.warning(f"Room not loaded ({problem.source}): {problem.message}")
    return found


def config_overrides(room: Room) -> dict[str, Any]:
    """Widgets for the room's simple config fields; returns only the changed values."""
    changed: dict[str, Any] = {}
    with st.expander("Room settings"):
        for name, field in room.config.model_fields.items():
            key, default = f"cfg-{room.name}-{name}", field.default
            help_text = field.description
            if field.annotation is bool:
                value = st.toggle(name, value=default, key=key, help=help_text)
            elif field.annotation in (int, float):
                bounds = {type(m).__name__: m for m in field.metadata}
                low = getattr(bounds.get("Ge"), "ge", None)
                high = getattr(bounds.get("Le"), "le", None)
                value = st.number_input(name, value=default, min_value=low, max_value=high,
                                        key=key, help=help_text)
            elif typing.get_origin(field.annotation) is typing.Literal:
                options = list(typing.get_args(field.annotation))
                value = st.selectbox(name, options, index=options.index(default), key=key,
                                     help=help_text)
            else:
                continue
            if value != default:
                changed[name] = value
    return changed


def session_picker(store: Store, room: str) -> str | None:
    """The session list of this room; a pending choice (a new or deleted session) wins."""
    if "pending_pick" in st.session_state:
        st.session_state[f"pick-{room}"] = st.session_state.pop("pending_pick")
    sessions = {s.id: s for s in store.list_sessions(room=room, limit=50)}
    options = [NEW, *sessions]
    if st.session_state.get(f"pick-{room}") not in options:
        st.session_state[f"pick-{room}"] = NEW

    def label(session_id: str) -> str:
        if session_id == NEW:
            return "+ new session"
        session = sessions[session_id]
        return f"{session.title[:40]} · {session.created_at:%m-%d %H:%M}"

    picked = st.selectbox("Session", options, format_func=label, key=f"pick-{room}")
    return None if picked == NEW else picked


def session_tools(store: Store, session_id: str) -> None:
    left, right = st.columns(2)
    left.download_button("Export JSON", store.export_transcript(session_id, "json"),
                         file_name=f"{session_id}.json", mime="application/json")
    right.download_button("Export Markdown", store.export_transcript(session_id, "markdown"),
                          file_name=f"{session_id}.md", mime="text/markdown")
    if st.button("Delete session", type="secondary"):
        store.delete_session(session_id)
        st.session_state["pending_pick"] = NEW
        st.rerun()


def history(store: Store, session_id: str, observer: bool) -> None:
    session = store.load(session_id)
    artifacts = {a.id: a for a in session.artifacts}
    for message in session.messages:
        if render.visible(message, observer):
            render.message(message, artifacts)


def run_turn(llm: Engine, store: Store, room: Room, session_id: str | None, text: str,
             options: ChatOptions, observer: bool) -> None:
    """Send one message, draw the room's replies as they come, then show decoding stats."""
    drafting = getattr(llm, "step", None)  # a local DraftStep or MedusaStep keeps counts
    drafting = drafting if hasattr(drafting, "steps") else None
    before = (drafting.steps, drafting.tokens) if drafting else (0, 0)
    tally = dataclasses.replace(llm.tally)
    started = time.perf_counter()
    turn = Turn(lambda listener: room.converse(llm, store, session_id, text,
                                               listener=listener, options=options))
    status = st.status("the room is working...", expanded=False)
    streamed: dict[str, int] = {}
    while (event := turn.next()).kind != "done":
        if event.kind == "status":
            status.update(label=event.text)
        elif event.kind == "delta":
            with st.chat_message(event.speaker, avatar=render.avatar(event.speaker)):
                st.markdown(f"**{render.safe(event.speaker)}**")
                st.write_stream(render.safe(d) for d in turn.deltas(event))
            streamed[event.speaker] = streamed.get(event.speaker, 0) + 1
        elif event.kind == "message":
            message = event.message
            if streamed.get(message.participant or ""):  # already drawn token by token
                streamed[message.participant] -= 1
            elif render.visible(message, observer):
                artifacts = {}
                if "image_artifact" in (message.meta or {}):
                    artifacts = {a.id: a for a in store.load(message.session_id).artifacts}
                render.message(message, artifacts)
        elif event.kind == "error":
            status.update(label="stopped", state="error")
            st.error(str(event.error))
            hint = getattr(event.error, "hint", None)
            if hint:
                st.caption(hint)
    stats = turn_stats(tally, llm.tally, time.perf_counter() - started)
    if drafting:
        steps, made = drafting.steps - before[0], drafting.tokens - before[1]
        stats["accepted tokens per step"] = round(made / steps, 2) if steps else None
    st.session_state["last_stats"] = stats
    if turn.result is not None:
        status.update(label="done", state="complete")
        if turn.result != session_id:  # a new session: select it in the sidebar
            st.session_state["pending_pick"] = turn.result
            st.rerun()
    decoding_stats()


def turn_stats(before: Tally, after: Tally, elapsed: float) -> dict[str, Any]:
    """The engine's work over one turn; tokens/s is over engine time, not page time."""
    tokens = after.completion_tokens - before.completion_tokens
    busy = after.busy_s - before.busy_s
    return {"seconds": round(elapsed, 2), "engine seconds": round(busy, 2),
            "engine batches": after.batches - before.batches,
            "requests": after.requests - before.requests,
            "completion tokens": tokens,
            "streamed chunks": after.stream_chunks - before.stream_chunks,
            "tokens/s (batched)": round(tokens / busy, 1) if busy and tokens else None}


def decoding_stats() -> None:
    if "last_stats" in st.session_state:
        with st.expander("decoding stats"):
            st.json(st.session_state["last_stats"])


def main() -> None:
    st.set_page_config(page_title="manyheads", page_icon=":material/forum:", layout="wide")
    settings = get_settings()
    try:
        store = load_store()
        available = chat_rooms()
    except ManyheadsError as exc:
        st.error(str(exc))
        return
    with st.sidebar:
        st.header("manyheads")
        names = list(available)
        name = st.selectbox("Room", names, key="room",
                            index=names.index(FIRST_ROOM) if FIRST_ROOM in names else 0)
        room = available[name]
        st.caption(room.description)
        kind = st.selectbox("Engine", list(ENGINES), format_func=ENGINES.get, key="engine")
        model = st.text_input("Model", value=settings.model, key="model")
        if model == DEFAULT_MODEL:
            st.caption(EMBEDDED_NOTE)
        base_url = st.text_input("Server URL", value=settings.base_url,
                                 key="base_url") if kind == "openai" else ""
        decoder = st.selectbox("Decoder", list(DECODERS), format_func=decoder_label,
                               key="decoder", disabled=kind != "local",
                               index=list(DECODERS).index(settings.decoder),
                               help="how the local engine decodes; the speed-ups were measured "
                                    "by bench/medusa.py on this machine, output is identical")
        verify = st.toggle("Step verification", key="verify",
                           help="score reasoning steps with the shipped uncertainty head")
        observer = st.toggle("Observer view", key="observer",
                             help="show hidden mental states and ToM estimates")
        overrides = config_overrides(room)
        session_id = session_picker(store, name)
        if session_id is not None:
            session_tools(store, session_id)

    st.title(f"{name} room")
    if session_id is not None:
        history(store, session_id, observer)
    text = st.chat_input("Message the room")
    if not text:
        decoding_stats()
        return
    try:
        llm = load_engine(kind, model, base_url, decoder)
    except ManyheadsError as exc:
        st.error(str(exc))
        return
    run_turn(llm, store, room, session_id, text,
             ChatOptions(verify=verify, config=overrides), observer)


main()
