"""Names that a model writes for people (personas, the two sides of a persuasion dialogue).

A small model asked for a name may answer "Creating a lifestyle of:" or "Start running today!";
a room must not use that. ``PersonName`` is a pydantic type (use it as a field of a
``response_model``): 1-3 words of letters, hyphens and apostrophes, each capitalised (lowercase
particles such as "van" or "de" inside), no trailing punctuation, no sentence or instruction
words, at most 40 characters. Surrounding whitespace, quotes and markdown emphasis are removed
first; anything else wrong is a ``ValidationError``. ``choose_name`` takes the first valid
candidate (after the caller's retries) or the documented fallback.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Annotated

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    Field,
    TypeAdapter,
    ValidationError,
    model_validator,
)

MAX_WORDS = 3
PARTICLES = frozenset({"van", "von", "de", "da", "di", "del", "der", "den", "du", "la", "le",
                       "al", "bin", "ibn", "ter", "ten", "y"})
# Words that show a sentence, an instruction or a placeholder, never part of a person's name.
NOT_NAME_WORDS = frozenset({
    "a", "the", "of", "to", "in", "on", "for", "with", "at", "by", "from", "about", "and",
    "or", "but", "is", "are", "was", "were", "be", "been", "am", "i", "you", "he", "she", "we",
    "they", "it", "my", "your", "his", "her", "our", "their", "this", "that", "these", "those",
    "not", "no", "yes", "please", "let", "lets", "let's", "today", "now", "here", "there",
    "start", "stop", "create", "creating", "make", "making", "write", "writing", "reply",
    "answer", "respond", "name", "names", "firstname", "lastname", "persuader", "persuadee",
    "user", "assistant", "system", "agent", "speaker", "person", "character", "persona",
    "unknown", "anonymous", "none", "null", "placeholder", "example", "someone", "somebody"})
# A title before a name ("Dr. Smith", "Mr. Liu"): allowed, and ignored when comparing names.
HONORIFICS = frozenset({"mr", "mrs", "ms", "miss", "dr", "prof", "sir", "dame", "mx"})
_WRAPPERS = " \t\n\"'`*_\u201c\u201d\u2018\u2019"


def _unwrap(value: object) -> object:
    """Remove surrounding whitespace, quotes and markdown emphasis; collapse inner spaces."""
    if not isinstance(value, str):
        return value
    return " ".join(value.strip(_WRAPPERS).split())


def _word_ok(word: str) -> bool:
    core = word.replace("-", "").replace("'", "").replace("\u2019", "")
    return bool(core) and core.isalpha() and word[0].isalpha() and word[-1].isalpha()


def _title(word: str) -> bool:
    return word.rstrip(".").lower() in HONORIFICS


def check_person_name(name: str) -> str:
    """``name`` if it is a plausible person's name, else ``ValueError`` saying why."""
    words = name.split()
    if len(words) > 1 and _title(words[0]):
        words = words[1:]  # "Dr. Smith": the title is checked by _title, the rest as a name
    if not 1 <= len(words) <= MAX_WORDS:
        raise ValueError(f"a name has 1 to {MAX_WORDS} words, got {len(words)}")
    for word in words:
        if not _word_ok(word):
            raise ValueError(f"{word!r}: a name word is letters, hyphens and apostrophes only")
        if word.lower() in NOT_NAME_WORDS:
            raise ValueError(f"{word!r} reads as a sentence or instruction, not a name")
    for i, word in enumerate(words):
        inner_particle = 0 < i < len(words) - 1 and word in PARTICLES
        if not (word[0].isupper() or inner_particle):
            raise ValueError(f"{word!r}: each word of a name starts with a capital letter")
    return name


PersonName = Annotated[str, BeforeValidator(_unwrap), Field(min_length=1, max_length=40),
                       AfterValidator(check_person_name)]
_ADAPTER = TypeAdapter(PersonName)


def person_name(value: object) -> str:
    """Validate and normalise one name (``ValidationError`` when it is not one)."""
    return _ADAPTER.validate_python(value)


def is_person_name(value: object) -> bool:
    try:
        person_name(value)
    except ValidationError:
        return False
    return True


def same_person(a: str, b: str) -> bool:
    """Two names a reader would confuse: equal, or the same first word after any title,
    ignoring case ("Ada Lovelace" and "Ada Byron"; "Dr. Smith" and "Dr. Jones" differ)."""
    a_words, b_words = ([w for w in n.casefold().split() if not _title(w)] or n.casefold().split()
                        for n in (a, b))
    return a_words == b_words or (bool(a_words) and bool(b_words) and a_words[0] == b_words[0])


def valid_pair(a: object, b: object) -> bool:
    """Both are valid names and they differ (not even in the first name)."""
    return is_person_name(a) and is_person_name(b) and not same_person(person_name(a),
                                                                       person_name(b))


class NamePair(BaseModel):
    """Two people's names, valid and different: a ``response_model`` for the scenario agent."""

    first: PersonName
    second: PersonName

    @model_validator(mode="after")
    def _differ(self) -> NamePair:
        if same_person(self.first, self.second):
            raise ValueError(f"the two names must differ, got {self.first!r} twice")
        return self


def choose_name(candidates: Iterable[object], fallback: str, *,
                avoid: Iterable[str] = ()) -> str:
    """The first candidate that is a valid name and not the same person as any name in
    ``avoid`` (normalised), else ``fallback``, which must itself be a valid name."""
    fallback = person_name(fallback)
    taken = list(avoid)
    for candidate in candidates:
        if is_person_name(candidate):
            name = person_name(candidate)
            if not any(same_person(name, other) for other in taken):
                return name
    if any(same_person(fallback, other) for other in taken):
        raise ValueError(f"the fallback {fallback!r} is one of the names to avoid {taken}")
    return fallback
