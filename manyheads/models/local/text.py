"""Token ids to text while generating: stop strings and safe streaming deltas."""

from __future__ import annotations


class TextTracker:
    """Follows one row's tokens; releases only text that can no longer change or be a stop string.

    Detokenising the whole row each step is O(n) but keeps multi-byte characters and merges right;
    the text held back is at most the longest stop string minus one, plus an unfinished character.
    """

    def __init__(self, tokenizer, stop: tuple[str, ...]) -> None:
        self.tokenizer = tokenizer
        self.stop = tuple(s for s in stop if s)
        self.holdback = max((len(s) for s in self.stop), default=1) - 1
        self.text = ""
        self.emitted = 0
        self.stopped = False

    def update(self, tokens: list[int], final: bool) -> str:
        """Recompute the text of ``tokens``; returns the new delta. Sets ``stopped`` on a stop."""
        if not self.stopped:
            self.text = self.tokenizer.decode(tokens, skip_special_tokens=True)
            cut = self._find_stop()
            if cut is not None:
                self.text, self.stopped, final = self.text[:cut], True, True
        end = len(self.text)
        if not final:
            end = max(self.emitted, end - self.holdback)
            while end > self.emitted and self.text[end - 1] == "\ufffd":
                end -= 1
        delta, self.emitted = self.text[self.emitted:end], end
        return delta

    def _find_stop(self) -> int | None:
        hits = [i for s in self.stop if (i := self.text.find(s)) >= 0]
        return min(hits) if hits else None
