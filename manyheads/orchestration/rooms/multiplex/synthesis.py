"""The panel's synthesis: a one-sentence overview, then one whole key point per member, attributed.

A small synthesizer asked for a free paragraph pastes the answers, cuts them or loops. Asked for
one sentence at a time under a JSON schema, every sentence it writes can be checked, and a
member whose point fails still gets a sentence of its own answer:

1. ``draft``: one request per heard member ("the key point of this answer") and one for the
   overview, in one batch, each decoded under the JSON schema of ``Draft`` and validated by
   pydantic (``Sentence``: one whole sentence of ``MIN_WORDS``..``MAX_WORDS`` words, no loop);
   ``grounded`` then asks that it is no echo of the question and stays on what it sums up
   (MiniLM cosine >= ``GROUNDED`` with the member's answer, or with the panel's answers).
2. The requests that failed go again with the next seed, ``TRIES`` rounds at most.
3. ``key_point``: a member whose point still failed gets the whole sentence of its own answer
   closest to its tradition's values (MiniLM); a member without one is left out, and so is a
   failed overview.
4. ``Synthesis.text``: the overview, then ``- Name: point`` per member in panel order, so the
   reader (and the PDS labeller) sees which tradition each point comes from.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, BeforeValidator, Field

from manyheads.agents.hygiene import cut_loop, is_echo, mid_sentence, sentences, strip_prefix
from manyheads.agents.prompts import Prompts
from manyheads.models import Engine, SamplingParams
from manyheads.models.embedder import embedder
from manyheads.models.types import ChatMessage

PROMPTS = Prompts(__package__)

MIN_WORDS, MAX_WORDS = 5, 32  # a key point: one sentence of this many words
MAX_CHARS = 200  # the schema's maxLength: the decoder closes the string by then
DRAFT_TOKENS = 64  # at most, per draft: {"sentence": "<up to MAX_WORDS words>"}
TRIES = 2  # rounds of drafts; what still fails is extracted
GROUNDED = 0.3  # MiniLM cosine between a drafted sentence and the text it sums up
MIN_DISTINCT = 0.35  # distinct/total words below which a text is a loop, not an answer
OVERVIEW = ""  # the key of the overview request among the members' names
_WRAP = " \t\n\"'`*_\u201c\u201d\u2018\u2019"


def degenerate(text: str) -> bool:
    """A looping text ("a wise and wise answer that is a wise..."): few distinct words."""
    words = re.findall(r"[a-z']+", text.lower())
    return len(words) >= 20 and len(set(words)) / len(words) < MIN_DISTINCT


def _squash(value: object) -> object:
    """Whitespace collapsed, surrounding quotes and markdown emphasis removed."""
    return " ".join(value.split()).strip(_WRAP) if isinstance(value, str) else value


def latin_share(text: str) -> float:
    """Share of the letters of ``text`` that are ASCII (1.0 without letters)."""
    letters = [c for c in text if c.isalpha()]
    return sum(c.isascii() for c in letters) / len(letters) if letters else 1.0


def same_script(text: str, like: str) -> bool:
    """False for a sentence in another script than ``like`` (Arabic words for an English
    question): a small model sometimes switches, and the student cannot read it."""
    return latin_share(like) < 0.9 or latin_share(text) >= 0.9


def check_sentence(text: str) -> str:
    """``text`` if it is one whole sentence of a sensible length, else ``ValueError``."""
    words = re.findall(r"[^\W\d_][\w'-]*", text)
    first = text.lstrip("\"'\u201c")[:1]
    if not (first.isdigit() or first.isalpha() and not first.islower()):
        raise ValueError("a key point starts a sentence (a capital letter, not '...')")
    if re.search(r"[{}\[\]<>|\\]", text):
        raise ValueError("a key point is prose, without brackets or markup")
    if not MIN_WORDS <= len(words) <= MAX_WORDS:
        raise ValueError(f"a key point has {MIN_WORDS} to {MAX_WORDS} words, got {len(words)}")
    if mid_sentence(text):
        raise ValueError("a key point ends its sentence")
    if len(sentences(text)) != 1:
        raise ValueError("a key point is one sentence")
    if cut_loop(text)[1] or degenerate(text):
        raise ValueError("a key point does not repeat itself")
    return text


Sentence = Annotated[str, BeforeValidator(_squash), Field(min_length=1, max_length=MAX_CHARS),
                     AfterValidator(check_sentence)]


class Draft(BaseModel):
    """What the synthesizer writes per request; its JSON schema constrains the decoding."""

    sentence: Sentence


class KeyPoint(BaseModel):
    member: str
    sentence: str
    source: Literal["model", "extract"]  # drafted by the synthesizer, or taken from the answer


class Synthesis(BaseModel):
    overview: str | None = None
    points: list[KeyPoint] = Field(default_factory=list)
    rounds: int = 0  # draft rounds run (0: nothing to draft)

    def text(self) -> str:
        lines = "\n".join(f"- {p.member}: {p.sentence}" for p in self.points)
        return "\n\n".join(part for part in (self.overview, lines) if part)

    def meta(self) -> dict[str, int | bool]:
        """How the synthesis was made, for the final message's meta."""
        return {"drafted": sum(p.source == "model" for p in self.points),
                "extracted": sum(p.source == "extract" for p in self.points),
                "overview": self.overview is not None, "rounds": self.rounds}


def whole_sentences(text: str, like: str = "") -> list[str]:
    """The sentences of ``text`` a key point may be: complete, of four words or more, no loop,
    in the script of ``like`` (the question)."""
    return [s for s in sentences(text) if not mid_sentence(s) and len(s.split()) >= 4
            and not degenerate(s) and same_script(s, like)]


def key_point(text: str, values: str, like: str = "") -> str | None:
    """The whole sentence of ``text`` closest to ``values`` (MiniLM cosine), None without one."""
    whole = whole_sentences(text, like)
    if not whole:
        return None
    model = embedder()
    a = model.encode(whole, normalize_embeddings=True, convert_to_numpy=True)
    b = model.encode([values], normalize_embeddings=True, convert_to_numpy=True)
    return " ".join(whole[int((a @ b.T).argmax())].split())


def grounded(sentence: str, source: str, question: str) -> bool:
    """No echo of the question, its script, and close enough (MiniLM) to the text it sums up."""
    if is_echo(sentence, question) or not same_script(sentence, question):
        return False
    model = embedder()
    a, b = model.encode([sentence, source], normalize_embeddings=True, convert_to_numpy=True)
    return float(a @ b) >= GROUNDED


def conversation(system: str, user: str) -> list[ChatMessage]:
    return [{"role": "system", "content": system}, {"role": "user", "content": user}]


def requests(question: str, answers: Sequence[dict[str, str]]) -> dict[str, list[ChatMessage]]:
    """Member name (``OVERVIEW`` for the overview) -> the synthesizer's conversation."""
    system = PROMPTS.render("synthesizer_system")
    views = {a["name"]: conversation(system, PROMPTS.render("key_point", question=question,
                                                           answer=a))
             for a in answers}
    if len(answers) > 1:
        views[OVERVIEW] = conversation(system, PROMPTS.render("overview", question=question,
                                                              answers=answers))
    return views


def draft(engine: Engine, question: str, answers: Sequence[dict[str, str]],
          params: SamplingParams) -> tuple[dict[str, str], int]:
    """The sentences that passed, by member name (``OVERVIEW``: the overview), and the rounds."""
    views = requests(question, answers)
    sources = {a["name"]: a["text"] for a in answers}
    sources[OVERVIEW] = " ".join(a["text"] for a in answers)
    names = [a["name"] for a in answers]
    passed: dict[str, str] = {}
    pending, rounds = list(views), 0
    seed = params.seed or 0
    while pending and rounds < TRIES:
        round_params = params.model_copy(update={
            "seed": seed + rounds, "max_tokens": min(params.max_tokens, DRAFT_TOKENS)})
        completions = engine.chat([views[key] for key in pending], round_params,
                                  response_model=Draft)
        rounds += 1
        failed = []
        for key, completion in zip(pending, completions, strict=True):
            text = completion.parsed.sentence if completion.parsed is not None else ""
            text = strip_prefix(text, names)[0] if text else ""
            if text and grounded(text, sources[key], question):
                passed[key] = text
            else:
                failed.append(key)
        pending = failed
    return passed, rounds


def synthesize_panel(engine: Engine, question: str, answers: Sequence[dict[str, str]],
                     values: dict[str, str], params: SamplingParams) -> Synthesis:
    """Overview and one key point per member of ``answers`` (in their order); see the module."""
    if not answers:
        return Synthesis()
    passed, rounds = draft(engine, question, answers, params)
    points = []
    for answer in answers:
        if answer["name"] in passed:
            points.append(KeyPoint(member=answer["name"], sentence=passed[answer["name"]],
                                   source="model"))
        elif (sentence := key_point(answer["text"], values[answer["name"]], question)):
            points.append(KeyPoint(member=answer["name"], sentence=sentence, source="extract"))
    return Synthesis(overview=passed.get(OVERVIEW), points=points, rounds=rounds)
