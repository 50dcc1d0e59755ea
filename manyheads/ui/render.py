"""How stored messages look on the page: one initials avatar per agent, escaped text, scores.

Everything a model or a person wrote is HTML-escaped before it reaches Markdown, so a message
holding ``<script>`` shows those characters instead of running them.
"""

from __future__ import annotations

import hashlib
import html
import io
from functools import cache
from typing import Any

import streamlit as st
from PIL import Image, ImageDraw, ImageFont

from manyheads.storage.models import Artifact, Message

COLOURS = ("#4e79a7", "#f28e2b", "#59a14f", "#e15759", "#76b7b2", "#b07aa1", "#9c755f",
           "#edc948", "#ff9da7", "#bab0ac", "#86bcb6", "#d37295")
FIXED = {"you": "#1f2937", "Room": "#6b7280", "Scene": "#6b7280", "Hidden state": "#6b7280"}


@cache
def avatar(name: str) -> bytes:
    """A PNG of the name's initials on a colour of its own: the same on every page and day, and
    drawn by us, so it needs no emoji font on the reader's machine."""
    colour = FIXED.get(name) or COLOURS[hashlib.sha256(name.encode()).digest()[0] % len(COLOURS)]
    words = [w for w in name.replace("(", " ").split() if w[:1].isalnum()]
    initials = "".join(w[0] for w in words[:2]).upper() or "?"
    image = Image.new("RGBA", (64, 64), (0, 0, 0, 0))
    draw = ImageDraw.Draw(image)
    draw.ellipse((0, 0, 63, 63), fill=colour)
    font = ImageFont.load_default(size=26)
    draw.text((32, 33), initials, fill="white", font=font, anchor="mm")
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


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
