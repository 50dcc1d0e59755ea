"""How stored messages look on the page: one avatar per agent, escaped text, scored steps.

Everything a model or a person wrote is HTML-escaped before it reaches Markdown, so a message
holding ``<script>`` shows those characters instead of running them.
"""

from __future__ import annotations

import hashlib
import html
from typing import Any

import streamlit as st

from manyheads.storage.models import Artifact, Message

AVATARS = ("🦊", "🦉", "🐢", "🐙", "🦜", "🐝", "🦋", "🐳", "🦔", "🐧", "🦚", "🐞")
FIXED = {"you": "👤", "Scene": "🎬", "Hidden state": "🔒", "Room": "🏁", "Synthesizer": "🧶",
         "AI Assistant": "🤖", "Drawer": "🎨", "observer": "👁️"}


def avatar(name: str) -> str:
    """The same emoji for the same name on every page and every day."""
    if name in FIXED:
        return FIXED[name]
    digest = hashlib.sha256(name.encode()).digest()
    return AVATARS[digest[0] % len(AVATARS)]


def safe(text: str) -> str:
    """Text shown as written: HTML escaped, Markdown line breaks kept."""
    return html.escape(text).replace("\n", "  \n")


def score_colour(score: float) -> str:
    """Red for doubtful steps through amber to green for trusted ones."""
    if score < 0.5:
        return "#f8d7da"
    return "#fff3cd" if score < 0.75 else "#d1e7dd"


def scored_steps(steps: list[dict[str, Any]]) -> str:
    spans = [f'<span title="UHead score {s["score"]:.2f}" style="background:'
             f'{score_colour(float(s["score"]))};padding:1px 3px;border-radius:3px">'
             f'{html.escape(str(s["text"]))}</span>' for s in steps]
    return "<br>".join(spans)


def visible(message: Message, observer_view: bool) -> bool:
    return message.visibility == "public" or (observer_view and message.visibility == "observer")


def message(msg: Message, artifacts: dict[int, Artifact]) -> None:
    """One stored message as a chat bubble, with whatever its room attached in ``meta``."""
    name = msg.participant or msg.role
    with st.chat_message(name if name != "you" else "user", avatar=avatar(name)):
        body(msg, artifacts)


def body(msg: Message, artifacts: dict[int, Artifact]) -> None:
    meta = msg.meta or {}
    label = f"**{safe(msg.participant or msg.role)}**"
    details = [f"{k} {meta[k]}" for k in ("stage", "round", "side") if k in meta]
    if msg.visibility == "observer":
        details.append("observer only")
    st.markdown(label + (f" · _{', '.join(details)}_" if details else ""))
    st.markdown(safe(msg.content))
    if msg.step_scores:
        st.markdown(scored_steps(msg.step_scores), unsafe_allow_html=True)
    if "pds" in meta:
        st.caption(f"Perspectives drawn on (PDS entropy {meta.get('pds_entropy', 0):.0f}%)")
        st.bar_chart(meta["pds"])
    image = artifacts.get(meta.get("image_artifact", -1))
    if image is not None and image.data is not None:
        st.image(image.data, caption=meta.get("caption") or image.name)
    if meta.get("subjects"):
        with st.expander("subject database"):
            st.json(meta["subjects"])
    if meta.get("layout"):
        with st.expander("layout boxes"):
            st.json(meta["layout"])
    for key in ("hidden", "estimate"):
        if key in meta:
            st.json(meta[key], expanded=False)
