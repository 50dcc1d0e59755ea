"""LocalEngine specifics: our decode loop batches exactly, and its pieces are testable alone."""

from __future__ import annotations

import pytest
import torch

from manyheads.models import SamplingParams
from manyheads.models.local.decode import left_pad, logits_to_probs, positions
from manyheads.models.local.text import TextTracker

PROMPTS = [
    [{"role": "user", "content": "Hi!"}],
    [{"role": "user", "content": "Explain in one sentence how a bicycle stays upright."}],
    [{"role": "user", "content": "List two fruits."}],
    [{"role": "user", "content": "Write the number seven as a word, then spell it backwards."}],
]


def test_batch_output_equals_one_by_one(local_engine):
    params = SamplingParams(max_tokens=20)
    batched = [c.text for c in local_engine.chat(PROMPTS, params)]
    alone = [local_engine.chat([p], params)[0].text for p in PROMPTS]
    assert batched == alone


def test_left_pad_and_positions():
    ids, mask = left_pad([[5, 6, 7], [8]], pad_id=0)
    assert ids.tolist() == [[5, 6, 7], [0, 0, 8]]
    assert mask.tolist() == [[1, 1, 1], [0, 0, 1]]
    assert positions(mask, 3).tolist() == [[0, 1, 2], [0, 0, 0]]
    grown = torch.cat([mask, torch.ones(2, 1, dtype=mask.dtype)], dim=1)
    assert positions(grown, 1).tolist() == [[3], [1]]


def test_top_p_keeps_the_nucleus_only():
    logits = torch.log(torch.tensor([0.5, 0.3, 0.15, 0.05]))
    probs = logits_to_probs(logits, temperature=1.0, top_p=0.7)
    assert probs[2:].sum() == 0
    assert torch.allclose(probs[:2], torch.tensor([0.625, 0.375]))
    assert torch.allclose(logits_to_probs(logits, 1.0, 1.0), torch.tensor([.5, .3, .15, .05]))


class _CharTokenizer:
    """One character per token id (ord), enough to test text assembly."""

    def decode(self, ids, skip_special_tokens=True):
        return "".join(chr(i) for i in ids)


def test_text_tracker_holds_back_a_possible_stop_string():
    tracker = TextTracker(_CharTokenizer(), stop=("END",))
    tokens: list[int] = []
    emitted = []
    for char in "hello EN":
        tokens.append(ord(char))
        emitted.append(tracker.update(tokens, final=False))
    assert "".join(emitted) == "hello "  # "EN" might start "END"
    tokens += [ord("D"), ord("!")]
    emitted.append(tracker.update(tokens, final=False))
    assert tracker.stopped and "".join(emitted) == "hello "


def test_text_tracker_flushes_everything_at_the_end():
    tracker = TextTracker(_CharTokenizer(), stop=("XYZ",))
    tokens = [ord(c) for c in "abcXY"]
    assert tracker.update(tokens, final=False) == "abc"
    assert tracker.update(tokens, final=True) == "XY"


def test_masked_passes_keep_grouped_heads_and_transformers_logits(local_engine, monkeypatch):
    """The engine's attention hands grouped K/V heads to SDPA as they are (transformers'
    ``repeat_kv`` copy never runs) on masked passes: a padded batch, then a tree after the
    cache. Its logits are transformers' own SDPA logits, bit for bit."""
    from transformers import AutoModelForCausalLM, DynamicCache
    from transformers.integrations import sdpa_attention

    from manyheads.models.local import gqa_attention
    from manyheads.models.local.prepack import prepack_linears
    from manyheads.models.medusa.tree import build_tree, tree_attention_mask, tree_positions

    assert local_engine.model.config._attn_implementation == gqa_attention.NAME
    reference = AutoModelForCausalLM.from_pretrained(local_engine.path, dtype=torch.float32,
                                                     attn_implementation="sdpa").eval()
    prepack_linears(reference)  # as the engine's model: only the attention differs
    ids, mask = left_pad([[5, 6, 7, 8, 9], [10, 11]], pad_id=0)
    tree = build_tree([(0,), (1,), (0, 0), (0, 1), (0, 0, 0)])
    nodes = torch.tensor([[21, 22, 23, 24, 25, 26]])

    def passes(model) -> tuple[torch.Tensor, torch.Tensor]:
        cache = DynamicCache()
        with torch.inference_mode():
            padded = model(input_ids=ids, attention_mask=mask, past_key_values=cache,
                           use_cache=True).logits
            for layer in cache.layers:  # the first row alone goes on with a tree
                layer.keys, layer.values = layer.keys[:1], layer.values[:1]
            tree_logits = model(
                input_ids=nodes, attention_mask=tree_attention_mask(mask[:1], tree, torch.float32),
                position_ids=tree_positions(tree, mask[:1].sum(-1)), past_key_values=cache,
                use_cache=True).logits
        return padded, tree_logits

    want = passes(reference)
    with monkeypatch.context() as patched:
        patched.setattr(sdpa_attention, "repeat_kv", lambda *a: pytest.fail("K/V copied"))
        got = passes(local_engine.model)
    assert torch.equal(got[0], want[0]) and torch.equal(got[1], want[1])
