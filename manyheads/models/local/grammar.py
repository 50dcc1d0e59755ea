"""JSON-schema constraints for our decode loop, driven by xgrammar's matcher and token bitmask."""

from __future__ import annotations

import json
from functools import lru_cache

import torch
import xgrammar as xgr


class JsonGrammar:
    """One request's constraint: masks disallowed tokens, follows the accepted ones."""

    def __init__(self, compiled: xgr.CompiledGrammar, vocab_size: int) -> None:
        self.matcher = xgr.GrammarMatcher(compiled)
        self.bitmask = xgr.allocate_token_bitmask(1, vocab_size)

    def mask(self, logits: torch.Tensor) -> None:
        """``logits``: [V], set to -inf where the grammar forbids the token."""
        self.matcher.fill_next_token_bitmask(self.bitmask)
        xgr.apply_token_bitmask_inplace(logits[None, :], self.bitmask)

    def accept(self, token: int) -> bool:
        return self.matcher.accept_token(token)

    def rollback(self, tokens: int) -> None:
        """Undo the last ``tokens`` accepted (a speculative step checks drafts, then rewinds)."""
        if tokens:
            self.matcher.rollback(tokens)

    def forced(self) -> str:
        """The longest text every continuation allowed from here starts with (keys, quotes,
        punctuation): a draft that needs no model."""
        return self.matcher.find_jump_forward_string()

    def done(self) -> bool:
        return self.matcher.is_terminated()


class GrammarFactory:
    """Compiles each distinct schema once (property order is kept: the model writes in it)."""

    def __init__(self, tokenizer, vocab_size: int) -> None:
        info = xgr.TokenizerInfo.from_huggingface(tokenizer, vocab_size=vocab_size)
        self.compiler = xgr.GrammarCompiler(info)
        self.vocab_size = vocab_size
        self._compile = lru_cache(maxsize=64)(self._compile_uncached)

    def _compile_uncached(self, schema_json: str) -> xgr.CompiledGrammar:
        # Compact JSON: a small model otherwise wanders into endless whitespace.
        return self.compiler.compile_json_schema(schema_json, any_whitespace=False)

    def for_schema(self, schema: dict) -> JsonGrammar:
        return JsonGrammar(self._compile(json.dumps(schema)), self.vocab_size)
