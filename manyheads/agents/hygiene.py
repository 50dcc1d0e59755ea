"""Utterance hygiene: one shared clean-up step for every free-text agent turn.

A small model cuts off at the token budget, writes letters ("Dear Basil,"), speaks for the
other party ("\\nBasil: ..."), loops and echoes its instruction. ``clean`` repairs what can be
repaired and flags the rest, in this order:

1. ``cut_script``: drop special tokens and scripted turns of anyone ("\\nBasil: ...").
2. ``strip_prefix``: drop a leading "Name:" (own or another speaker's) and a salutation.
3. ``cut_loop``: cut at the first repeated sentence or repeated run of words.
4. ``trim_to_sentence``: a text cut by the budget, or without a sentence end, goes back to its
   last complete sentence. With none, a text cut by the budget or by a loop is a fragment
   ("It's not my", "Family, wise, family,"): nothing usable. A text the model ended itself
   without a full stop ("Sure thing") is kept and flagged ``mid_sentence``.
5. ``drop_repeats``: drop sentences already said earlier in the dialogue (``earlier``) or in this
   utterance: a small model copies the last turn back word for word.
6. ``strip_signoff``: drop a letter's closing ("Best regards,\\nAda").
7. ``is_echo``: flag an echoed instruction (the caller resamples once).
8. Nothing left (empty, whitespace, only a loop or punctuation): ``PLACEHOLDER``, ``empty``.

``enabled()`` is the one switch (setting ``MANYHEADS_HYGIENE``, on by default): off, ``clean``
repairs nothing and only flags what it sees, and rooms sample without repetition control, which
is how ``bench/quality.py`` measures both against the raw model in one run.

Everything here is a pure function of strings (``clean`` also reads the switch); the metric
helpers at the end (``mid_sentence``, ``repeated_sentence_rate``, ``distinct_n``, ``is_echo``)
score datasets.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable, Sequence

from pydantic import BaseModel, Field

PLACEHOLDER = "(No usable reply this turn.)"  # a whole sentence, flagged ``empty``
ROLE_LABELS = ("User", "Assistant", "System", "Human", "AI")

# "Dr. Smith" and "e.g. this" do not end a sentence; "etc." usually does, so it is not here.
ABBREVIATIONS = frozenset({
    "dr", "mr", "mrs", "ms", "prof", "st", "jr", "sr", "vs", "e.g", "i.e", "cf", "al", "fig",
    "approx", "inc", "ltd", "co", "corp", "mt", "gen", "col", "lt", "sgt", "capt", "rev", "hon",
    "dept", "est", "vol", "ch", "pp", "min", "max", "jan", "feb", "aug", "sept", "oct", "nov",
    "dec", "u.s", "u.k", "a.m", "p.m"})
NUMBERED = frozenset({"no", "p", "nos"})  # abbreviations only before a number: "No. 5"

# Sentence ends: Latin, CJK (。！？), Devanagari danda (। ॥), Arabic question mark and Urdu stop.
_END = re.compile(r"(?:[.!?\u2026]+|[\u3002\uff01\uff1f\u0964\u0965\u061f\u06d4])"
                  r"[\"'\u201d\u2019)\]*_]*(?=\s|$)")
_WORD = re.compile(r"[\w']+")
_SPECIAL = re.compile(r"<\|[a-z_]+\|>|</s>|<s>")
_SALUTE = re.compile(r"(?:dear|hi|hello|hey|greetings)\b[\s,]*(?:there\b[\s,]*)?", re.I)
_DEAR_ANYONE = re.compile(r"dear\s+[^,:;!\n.]{1,40}[,:;!]\s*", re.I)
_SIGNOFF = re.compile(
    r"\n\s*(?:best(?: regards| wishes)?|kind regards|warm(?:est)? regards|regards|sincerely|"
    r"yours(?: truly| sincerely)?|cheers|all the best)\s*[,!.]?\s*(?:\n[^\n]{0,40})?\s*$", re.I)
_NAME_SLOT = re.compile(r"\[(?:your|my) name\]", re.I)


class Cleaned(BaseModel):
    """An utterance after hygiene, with what was done to it."""

    text: str
    trimmed: bool = False  # cut back to its last complete sentence
    looped: bool = False  # a repetition was cut
    echoed: bool = False  # it repeats the instruction: resample once
    stripped_prefix: bool = False  # a leading "Name:" or salutation was removed
    empty: bool = False  # nothing usable was left: ``text`` is ``PLACEHOLDER``
    flags: list[str] = Field(default_factory=list)  # every step that fired, in order

    @property
    def retry(self) -> bool:
        """Worth sampling once more: an echo, nothing usable, or no whole sentence."""
        return self.echoed or self.empty or "mid_sentence" in self.flags

    def meta(self) -> dict[str, list[str]]:
        """What to store in a message's meta: every free-text turn carries its flags (an empty
        list when it was clean), which is how dataset metrics tell utterances from notices."""
        return {"hygiene": list(self.flags)}


def enabled() -> bool:
    """Whether hygiene and the rooms' repetition control are on (``MANYHEADS_HYGIENE``)."""
    from manyheads.settings import get_settings

    return get_settings().hygiene


# -- sentences -----------------------------------------------------------------------------------
def _is_end(text: str, match: re.Match) -> bool:
    """Whether a candidate end is real: not "Dr.", "e.g.", an initial or a list number."""
    if text[match.start()] != "." or match.group().startswith(".."):
        return True
    before = re.search(r"([\w.]+)$", text[:match.start()])
    if before is None:
        return True
    word = before.group(1).rstrip(".")
    rest = text[match.end():].lstrip()
    if not rest:
        return True  # the text ends here: "We met at 7 a.m."
    if word.lower() in ABBREVIATIONS:
        return False
    if word.lower() in NUMBERED and rest[:1].isdigit():
        return False
    if len(word) == 1 and word.isupper() and rest[:1].isupper():
        return False  # an initial: "J. Smith"
    line_start = text.rfind("\n", 0, before.start()) + 1
    return not (word.isdigit() and not text[line_start:before.start()].strip())  # "1. Go"


def sentence_ends(text: str) -> list[int]:
    """Offsets just after every real sentence end (punctuation and closing quotes)."""
    return [m.end() for m in _END.finditer(text) if _is_end(text, m)]


def split_sentences(text: str) -> list[tuple[int, int]]:
    """Spans of sentences, split at sentence ends and at line breaks; blank spans dropped."""
    cuts = sorted({0, len(text), *sentence_ends(text),
                   *(m.end() for m in re.finditer(r"\n", text))})
    spans = []
    for start, end in zip(cuts, cuts[1:], strict=False):
        piece = text[start:end]
        if piece.strip():
            lead = len(piece) - len(piece.lstrip())
            spans.append((start + lead, start + len(piece.rstrip())))
    return spans


def sentences(text: str) -> list[str]:
    return [text[a:b] for a, b in split_sentences(text)]


def _words(text: str) -> list[str]:
    return _WORD.findall(text.lower())


def _norm(sentence: str) -> str:
    return " ".join(_words(sentence))


# -- the steps -----------------------------------------------------------------------------------
def _aliases(names: Iterable[str]) -> list[str]:
    """Names and their first word ("Marie" for "Marie Curie"), longest first."""
    found = set()
    for name in names:
        name = name.strip()
        if not name:
            continue
        found.add(name)
        first = name.split()[0]
        if len(name.split()) > 1 and len(first) > 2 and not first.endswith("."):
            found.add(first)
    return sorted(found, key=len, reverse=True)


def _label(names: Sequence[str]) -> str:
    """Regex for a speaker label: "Ada:", "**Ada:**", "Ada (persuader):"."""
    alt = "|".join(re.escape(n) for n in _aliases([*names, *ROLE_LABELS]))
    return rf"[\s*_\"]*(?:{alt})[\s*_\"]*(?:\([^)\n]{{0,30}}\))?[\s*_\"]*:[*_]*"


def cut_script(text: str, names: Sequence[str]) -> tuple[str, bool]:
    """Cut at a special token or at a later line that starts another scripted turn."""
    cut = len(text)
    special = _SPECIAL.search(text)
    if special:
        cut = special.start()
    script = re.search(rf"(?:\n|(?<=[.!?]) ){_label(names)}", text[1:], re.I)
    if script:
        cut = min(cut, script.start() + 1)
    return (text[:cut], True) if cut < len(text) else (text, False)


def strip_prefix(text: str, names: Sequence[str]) -> tuple[str, bool]:
    """Drop leading speaker labels and salutations ("Ada:", "Dear Basil,") until none is left."""
    label = re.compile(_label(names), re.I)
    alt = "|".join(re.escape(n) for n in _aliases(names))
    salute = re.compile(rf"{_SALUTE.pattern}(?:{alt})\b\s*[,!.:;\-]*\s*", re.I) if alt else None
    stripped = False
    while True:
        for pattern in (label, salute, _DEAR_ANYONE):
            match = pattern.match(text) if pattern is not None else None
            if match and match.end() > 0:
                text, stripped = text[match.end():].lstrip(), True
                break
        else:
            return text, stripped


def _run_cut(words: list[str]) -> int | None:
    """Word index where an immediate repetition starts ("a b a b a b": 2), or None.

    A run is 4 copies of one word, 3 copies of 2-3 words, or 2 copies of 4-12 words.
    """
    for i in range(len(words)):
        for k in range(1, 13):
            copies = 4 if k == 1 else 3 if k <= 3 else 2
            if i + k * copies > len(words):
                break
            if all(words[i + k * j:i + k * (j + 1)] == words[i:i + k] for j in range(1, copies)):
                return i + k
    return None


def _ngram_cut(words: list[str], n: int = 8) -> int | None:
    """Word index of the first n-gram that already occurred (not overlapping), or None."""
    seen: dict[tuple[str, ...], int] = {}
    for i in range(len(words) - n + 1):
        gram = tuple(words[i:i + n])
        if gram in seen and seen[gram] + n <= i:
            return i
        seen.setdefault(gram, i)
    return None


def cut_loop(text: str) -> tuple[str, bool]:
    """Cut at the first repeated sentence, repeated run of words or repeated long n-gram."""
    cuts = []
    seen: set[str] = set()
    previous = None
    for start, end in split_sentences(text):
        norm = _norm(text[start:end])
        if norm and (norm == previous or (norm in seen and len(norm.split()) >= 3)):
            cuts.append(start)
            break
        seen.add(norm)
        previous = norm
    spans = [m.span() for m in _WORD.finditer(text)]
    words = [text[a:b].lower() for a, b in spans]
    for index in (_run_cut(words), _ngram_cut(words)):
        if index is not None:
            cuts.append(spans[index][0])
    if not cuts:
        return text, False
    return text[:min(cuts)].rstrip(), True


def trim_to_sentence(text: str) -> tuple[str, bool]:
    """Cut back to the end of the last complete sentence; unchanged if there is none."""
    ends = sentence_ends(text)
    if not ends or not text[ends[-1]:].strip():
        return text, False
    return text[:ends[-1]], True


def drop_repeats(text: str, earlier: Iterable[str] = ()) -> tuple[str, bool]:
    """Drop every sentence said before: in ``earlier`` texts or earlier in ``text`` itself
    (compared as lowercase words, as ``repeated_sentence_rate`` counts them)."""
    seen = {_norm(s) for said in earlier for s in sentences(said)}
    kept, dropped, last = [], False, None
    for start, end in split_sentences(text):
        norm = _norm(text[start:end])
        if norm and norm in seen:
            dropped = True
            continue
        seen.add(norm)
        if last is not None:
            kept.append("\n" if "\n" in text[last:start] else " ")
        kept.append(text[start:end])
        last = end
    return ("".join(kept), True) if dropped else (text, False)


def strip_signoff(text: str) -> tuple[str, bool]:
    """Drop a letter's closing and "[Your Name]" slots."""
    cleaned = _SIGNOFF.sub("", _NAME_SLOT.sub("", text))
    return (cleaned.rstrip(), True) if cleaned != text else (text, False)


# -- the one entry -------------------------------------------------------------------------------
def clean(text: str, *, speaker: str, others: Sequence[str] = (), instruction: str | None = None,
          finish_reason: str | None = None, earlier: Sequence[str] = ()) -> Cleaned:
    """Clean one utterance of ``speaker`` (``others``: the other speakers' names; ``earlier``:
    what was said before in the dialogue, not to be said again)."""
    if not enabled():
        return flag_only(text, instruction)
    flags: list[str] = []
    names = [speaker, *others]
    text, cut = cut_script(text or "", names)
    if cut:
        flags.append("scripted")
    text, stripped = strip_prefix(text.strip(), names)
    if stripped:
        flags.append("stripped_prefix")
    text, looped = cut_loop(text)
    if looped:
        flags.append("looped")
    trimmed = False
    if finish_reason == "length" or looped or cut or mid_sentence(text):
        text, trimmed = trim_to_sentence(text)
        if trimmed:
            flags.append("trimmed")
    text, repeated = drop_repeats(text, earlier)
    if repeated:
        flags.append("repeated")
    text, signed = strip_signoff(text)
    if signed:
        flags.append("signoff")
    text = text.strip()
    echoed = bool(instruction) and is_echo(text, instruction)
    if echoed:
        flags.append("echoed")
    if (finish_reason == "length" or looped) and mid_sentence(text):
        text = ""  # no whole sentence survived the cut
        flags.append("fragment")
    empty = not any(ch.isalnum() for ch in text)
    if empty:
        text = PLACEHOLDER
        flags.append("empty")
    elif mid_sentence(text):
        flags.append("mid_sentence")
    return Cleaned(text=text, trimmed=trimmed, looped=looped, echoed=echoed,
                   stripped_prefix=stripped, empty=empty, flags=flags)


def flag_only(text: str, instruction: str | None = None) -> Cleaned:
    """``clean`` with hygiene off: the text as the model wrote it (stripped), flagged for an echo,
    nothing usable or a sentence end missing, so the raw model can be measured the same way."""
    text = (text or "").strip()
    flags = []
    if instruction and is_echo(text, instruction):
        flags.append("echoed")
    empty = not any(ch.isalnum() for ch in text)
    if empty:
        flags.append("empty")
    elif mid_sentence(text):
        flags.append("mid_sentence")
    return Cleaned(text=text, echoed="echoed" in flags, empty=empty, flags=flags)


# -- metrics for datasets ------------------------------------------------------------------------
def mid_sentence(text: str) -> bool:
    """True when a non-empty text does not end a sentence (trailing emoji are ignored)."""
    body = text.rstrip()
    while body and (unicodedata.category(body[-1])[0] == "S"  # emoji and other symbols
                    or unicodedata.category(body[-1]) in ("Mn", "Cf")):  # their joiners
        body = body[:-1].rstrip()
    if not body:
        return False
    ends = sentence_ends(body)
    return not ends or ends[-1] != len(body)


def repeated_sentence_rate(texts: Iterable[str]) -> float:
    """Share of sentences that repeat an earlier sentence of the same text (pass a whole
    dialogue as one text to count repeats across its turns)."""
    total = repeated = 0
    for text in texts:
        seen: set[str] = set()
        for sentence in sentences(text):
            norm = _norm(sentence)
            if not norm:
                continue
            total += 1
            repeated += norm in seen
            seen.add(norm)
    return repeated / total if total else 0.0


def distinct_n(texts: Iterable[str], n: int) -> float:
    """Distinct-n (Li et al., 2016): unique word n-grams / all word n-grams over ``texts``."""
    grams = [tuple(words[i:i + n]) for words in map(_words, texts)
             for i in range(len(words) - n + 1)]
    return len(set(grams)) / len(grams) if grams else 0.0


def is_echo(text: str, instruction: str, *, overlap: float = 0.7) -> bool:
    """True when ``text`` starts with the instruction's first words, when most of its word
    bigrams come from the instruction, or when it contains most of the instruction's trigrams."""
    said, asked = _words(text), _words(instruction)
    if not said or not asked:
        return False
    head = min(len(asked), 6)
    if head >= 3 and said[:head] == asked[:head]:
        return True
    said_bi = list(zip(said, said[1:], strict=False))
    asked_bi = set(zip(asked, asked[1:], strict=False))
    if len(said_bi) >= 3 and sum(b in asked_bi for b in said_bi) / len(said_bi) >= overlap:
        return True
    asked_tri = set(zip(asked, asked[1:], asked[2:], strict=False))
    said_tri = set(zip(said, said[1:], said[2:], strict=False))
    return len(asked_tri) >= 4 and len(asked_tri & said_tri) / len(asked_tri) >= overlap


QUALITY_NOTE = (
    "Quality is measured over every agent utterance after the hygiene step: the share trimmed "
    "back to a whole sentence (`trimmed_rate`), still ending mid-sentence "
    "(`mid_sentence_rate`), sentences repeating an earlier one of the same dialogue "
    "(`repeated_sentence_rate`), echoes of the agent's instruction (`instruction_echo_rate`), "
    "placeholders for an empty reply (`empty_rate`), distinct-1/2 (unique word uni-/bigrams "
    "over all), mean words per utterance, and the share of dialogues whose model-written "
    "names are not two different people's names (`invalid_name_rate`).")


def quality(utterances: Sequence[tuple[str, Sequence[str]]], *,
            dialogues: Sequence[Sequence[str]] = ()) -> dict[str, float | int]:
    """Dataset quality of cleaned utterances ``(text, hygiene flags)``; ``dialogues`` (each a
    list of its utterances) gives the repeated-sentence rate across a dialogue's turns."""
    texts = [text for text, _ in utterances]
    n = len(texts)
    if not n:
        return {"utterances": 0}

    def share(flag: str) -> float:
        return round(sum(flag in flags for _, flags in utterances) / n, 4)

    whole = ["\n".join(d) for d in dialogues] or texts
    return {
        "utterances": n,
        "trimmed_rate": share("trimmed"),
        "mid_sentence_rate": round(sum(mid_sentence(t) for t in texts) / n, 4),
        "repeated_sentence_rate": round(repeated_sentence_rate(whole), 4),
        "instruction_echo_rate": share("echoed"),
        "empty_rate": share("empty"),
        "distinct_1": round(distinct_n(texts, 1), 4),
        "distinct_2": round(distinct_n(texts, 2), 4),
        "mean_words": round(sum(len(_words(t)) for t in texts) / n, 2),
    }
