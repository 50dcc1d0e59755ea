"""Medusa heads: tree math against brute force, lossless greedy decoding, checkpoints, export."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors import safe_open

from manyheads.errors import ConfigError
from manyheads.models.engine import Request, encode_prompt
from manyheads.models.local.decode import vanilla_step
from manyheads.models.local.engine import LocalEngine
from manyheads.models.medusa import (
    DEFAULT_TREE,
    MedusaConfig,
    MedusaHeads,
    default_heads_dir,
    enable_medusa,
    export_vllm,
    load_heads,
)
from manyheads.models.medusa.heads import previous_tokens
from manyheads.models.medusa.training.data import (
    Prompt,
    chat,
    generate,
    head_targets,
    load_sequences,
)
from manyheads.models.medusa.tree import (
    ancestor_mask,
    build_tree,
    candidate_tokens,
    from_parents,
    graft_chain,
    greedy_accept,
    rejection_accept,
    tree_attention_mask,
    tree_positions,
    worth_verifying,
)
from manyheads.models.types import SamplingParams

SMALL_TREES = [
    [(0,)],
    [(0,), (1,), (0, 0)],
    [(0,), (1,), (2,), (0, 0), (0, 1), (1, 0), (0, 0, 0)],
    [(1,), (0,), (0, 2), (0, 1), (0, 0), (0, 2, 0)],
    DEFAULT_TREE,
]


def brute_mask(paths, prefix_mask):
    """Reference: node k is visible from node q when k's path is a prefix of q's path."""
    nodes = [()] + sorted({tuple(p) for p in paths}, key=lambda p: (len(p), p))
    b, s = prefix_mask.shape
    n = len(nodes)
    out = torch.full((b, 1, n, s + n), torch.finfo(torch.float32).min)
    for row in range(b):
        for q in range(n):
            for k in range(s):
                if prefix_mask[row, k]:
                    out[row, 0, q, k] = 0.0
            for k in range(n):
                if nodes[q][:len(nodes[k])] == nodes[k]:
                    out[row, 0, q, s + k] = 0.0
    positions = torch.tensor([[int(prefix_mask[r].sum()) + len(p) for p in nodes]
                              for r in range(b)])
    return out, positions


@pytest.mark.parametrize("paths", SMALL_TREES)
def test_tree_mask_and_positions_match_brute_force(paths):
    tree = build_tree(paths)
    prefix = torch.tensor([[0, 0, 1, 1, 1], [1, 1, 1, 1, 1]])
    want_mask, want_pos = brute_mask(paths, prefix)
    assert torch.equal(tree_attention_mask(prefix, tree), want_mask)
    assert torch.equal(tree_positions(tree, prefix.sum(-1)), want_pos)
    assert ancestor_mask(tree).diagonal().all()


def test_tree_rejects_orphan_paths():
    from manyheads.errors import ConfigError
    with pytest.raises(ConfigError):
        build_tree([(0,), (1, 0)])


def test_greedy_accept_takes_longest_verified_path():
    tree = build_tree([(0,), (1,), (0, 0), (1, 0)])  # nodes: root, (0,), (1,), (0,0), (1,0)
    topk = torch.tensor([[10, 11], [20, 21]])  # head 0 guesses 10, 11; head 1 guesses 20, 21
    tokens = candidate_tokens(tree, 5, topk)
    assert tokens.tolist() == [5, 10, 11, 20, 20]
    argmax = torch.tensor([11, 99, 20, 0, 0])  # base: after root 11, after node (1,) 20
    assert greedy_accept(tree, tokens, argmax) == [0, 2, 4]
    assert greedy_accept(tree, tokens, torch.tensor([7, 0, 0, 0, 0])) == [0]


def test_a_drawn_tree_keeps_the_likely_nodes_that_pay_for_their_pass():
    """Scores estimate each node's chance to be kept; a cheap pass verifies them all, a dear
    one only the root, a node budget the best; the kept nodes make a tree that verifies."""
    scores = [1.0, 0.9, 0.05, 0.8]  # root; two children of the root; a child of node 1
    parents = [-1, 0, 0, 1]
    assert worth_verifying(scores, lambda n: 1 + 0.01 * (n - 1), 16, 1.0) == [0, 1, 2, 3]
    assert worth_verifying(scores, lambda n: 1 + 0.01 * (n - 1), 3, 1.0) == [0, 1, 3]
    assert worth_verifying(scores, lambda n: 1 + 0.95 * (n - 1), 16, 1.0) == [0]
    tree = from_parents(parents, scores)
    assert tree.paths == ((0,), (1,), (0, 0)) and tree.depths == (0, 1, 1, 2)
    tokens = torch.tensor([5, 10, 11, 20])
    assert greedy_accept(tree, tokens, torch.tensor([10, 20, 0, 0])) == [0, 1, 3]
    assert greedy_accept(from_parents([-1], [1.0]), tokens[:1], tokens[:1]) == [0]


def test_a_grafted_chain_shares_the_nodes_the_heads_guessed_and_branches_off_after():
    """The n-gram chain joins a drawn tree: a token the heads already guessed there is one node
    with the better score; past that the chain is its own branch, as deep as it goes."""
    parents, tokens, scores = [-1, 0, 0, 1], [5, 10, 11, 20], [1.0, 0.6, 0.3, 0.2]
    path = graft_chain(parents, tokens, scores, [(10, 0.9), (21, 0.8), (30, 0.7)])
    assert path == [1, 4, 5]
    assert parents == [-1, 0, 0, 1, 1, 4] and tokens == [5, 10, 11, 20, 21, 30]
    assert scores == [1.0, 0.9, 0.3, 0.2, 0.8, 0.7]
    keep = worth_verifying(scores, lambda n: 1 + 0.2 * (n - 1), 16, 1.0)
    assert keep == [0, 1, 4, 5]  # the confident chain pays; the heads' weak guesses do not
    assert graft_chain(parents, tokens, scores, []) == []


def test_rejection_sampling_matches_base_distribution():
    """One-level tree: the emitted token must follow p exactly, whatever the drafts are."""
    tree = build_tree([(0,), (1,)])
    p = torch.tensor([0.5, 0.3, 0.15, 0.05])
    tokens = torch.tensor([0, 1, 3])  # drafts: 1 then 3
    probs = p.expand(3, 4)
    gen = torch.Generator().manual_seed(0)
    counts = torch.zeros(4)
    trials = 20000
    for _ in range(trials):
        path, extra = rejection_accept(tree, tokens, probs, gen)
        counts[extra if extra is not None else int(tokens[path[-1]])] += 1
    assert torch.allclose(counts / trials, p, atol=0.015)


@pytest.mark.parametrize("path", [[0], [0, 1, 2], [0, 2], [0, 1, 4], [0, 3, 4]])
def test_keep_path_leaves_the_prefix_then_exactly_the_accepted_nodes(path):
    from transformers import DynamicCache

    from manyheads.models.medusa.step import keep_path

    prefix, nodes = 3, 5
    cache = DynamicCache()
    for layer in range(2):
        keys = torch.randn(1, 2, prefix + nodes, 4)
        cache.update(keys, -keys, layer)
    before = [(layer.keys.clone(), layer.values.clone()) for layer in cache.layers]
    keep_path(cache, prefix, path)
    rows = list(range(prefix)) + [prefix + n for n in path]
    for layer, (keys, values) in zip(cache.layers, before, strict=True):
        assert torch.equal(layer.keys, keys[:, :, rows])
        assert torch.equal(layer.values, values[:, :, rows])


def test_head_targets_shift():
    t = head_targets([1, 2, 3, 4], 3)
    assert t.tolist() == [[2, 3, 4], [3, 4, -100], [4, -100, -100], [-100, -100, -100]]


def test_shipped_prompt_set_is_the_builder_output_with_the_first_1500_unchanged():
    from manyheads.models.medusa.training import prompt_set

    shipped = [json.loads(line) for line in prompt_set.PROMPTS_FILE.read_text().splitlines()]
    base = [r for r in shipped if r["id"] < prompt_set.BASE_COUNT]
    first = prompt_set.build(base)
    assert shipped[:len(first)] == first  # the eval split and earlier numbers stay comparable
    assert shipped == prompt_set.extend(first)
    assert len(shipped) == prompt_set.EXTENDED
    assert all(r["split"] == "train" for r in shipped[len(first):])
    assert len({r["prompt"].lower() for r in shipped}) == len(shipped)
    counts = {c: sum(r["category"] == c for r in shipped) for c in prompt_set.CATEGORIES}
    assert set(counts.values()) == {prompt_set.EXTENDED // len(prompt_set.CATEGORIES)}


def test_checkpoint_round_trip(tmp_path):
    heads = MedusaHeads(MedusaConfig(num_heads=2, hidden_size=8, vocab_size=16))
    for block in heads.blocks:
        torch.nn.init.normal_(block[0].linear.weight)
    heads.save(tmp_path)
    again = load_heads(tmp_path)
    assert again.config == heads.config
    x, w = torch.randn(3, 8), torch.randn(16, 8)
    assert torch.equal(heads(x, w), again(x, w))
    own = MedusaHeads(MedusaConfig(num_heads=2, hidden_size=8, vocab_size=16,
                                   shared_lm_head=False))
    own.init_lm_heads_from(w)
    own.save(tmp_path / "own")
    assert torch.equal(load_heads(tmp_path / "own")(x), own(x))


def test_previous_tokens_feed_each_head_the_token_before_its_target():
    prev, y = previous_tokens([1, 2, 3, 4], 3), head_targets([1, 2, 3, 4], 3)
    assert prev.tolist() == [[1, 2, 3], [2, 3, 4], [3, 4, -100], [4, -100, -100]]
    # head i's previous token is head i-1's target: the chain Hydra drafts along
    assert torch.equal(prev[:, 1:][y[:, :-1] != -100], y[:, :-1][y[:, :-1] != -100])


def test_hydra_heads_start_as_medusa_and_round_trip(tmp_path):
    cfg = MedusaConfig(num_heads=2, hidden_size=8, vocab_size=16, sequential=True)
    hydra = MedusaHeads(cfg)
    medusa = MedusaHeads(cfg.model_copy(update={"sequential": False}))
    medusa.load_state_dict(hydra.state_dict(), strict=False)
    x, w, prev = torch.randn(3, 8), torch.randn(16, 8), torch.randn(2, 3, 8)
    assert torch.equal(hydra(x, w, prev), medusa(x, w))  # U = 0: the token is ignored
    for proj in hydra.token_proj:
        torch.nn.init.normal_(proj.weight)
    assert not torch.equal(hydra(x, w, prev), medusa(x, w))
    hydra.save(tmp_path)
    assert torch.equal(load_heads(tmp_path)(x, w, prev), hydra(x, w, prev))
    with pytest.raises(ConfigError, match="previous token"):
        hydra(x, w)
    with pytest.raises(ConfigError, match="Hydra"):
        export_vllm(tmp_path, tmp_path / "vllm")


def test_shipped_heads_exist():
    for sequential in (True, False):
        heads = load_heads(default_heads_dir(sequential))
        assert heads.config.sequential is sequential
        assert heads.config.hidden_size == 576 and heads.config.vocab_size == 49152
        assert heads.config.training.get("steps", 0) > 0
    assert load_heads().config.sequential  # Hydra decodes by default


def test_vllm_export_names_and_shapes(tmp_path):
    cfg = load_heads(default_heads_dir(sequential=False)).config
    out = export_vllm(None, tmp_path / "vllm")  # the shipped Medusa heads
    config = json.loads((out / "config.json").read_text())
    assert config["architectures"] == ["MedusaModel"] and config["model_type"] == "medusa"
    assert config["num_heads"] == cfg.num_heads and config["num_hidden_layers"] == cfg.num_layers
    with safe_open(str(out / "model.safetensors"), "pt") as f:
        shapes = {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}
    want = {}
    for h in range(cfg.num_heads):
        for layer in range(cfg.num_layers):
            want[f"blocks.{h}.layers.{layer}.weight"] = (576, 576)
        want[f"lm_heads.{h}.weight"] = (49152, 576)
    assert shapes == want


@pytest.fixture(scope="module")
def engine():
    torch.set_num_threads(1)  # steadier than 2 on a CPU shared with other work
    return LocalEngine(decoder="vanilla")


PROMPTS = ["Write a haiku about morning coffee.",
           "A shop sells pencils at 3 for 45 cents. How much do 12 pencils cost?",
           "You are a grumpy lighthouse keeper. Tell me about your day.",
           "Describe a busy market at dawn."]


def _tokens(engine, prompt, max_tokens):
    req = Request(prompt=[{"role": "user", "content": prompt}],
                  params=SamplingParams(max_tokens=max_tokens, logprobs=0))
    completion = engine._run([req])[0]
    return completion.text, [t.token for t in completion.logprobs]


@pytest.mark.parametrize("sequential", [True, False], ids=["hydra", "medusa"])
def test_greedy_shipped_heads_are_token_for_token_vanilla(engine, sequential):
    want = [_tokens(engine, p, 32) for p in PROMPTS]
    step = enable_medusa(engine, default_heads_dir(sequential))
    try:
        got = [_tokens(engine, p, 32) for p in PROMPTS]
    finally:
        engine.step = vanilla_step
    assert got == want
    assert step.mean_accepted > 1.0
    assert step.drawn == sequential  # Hydra heads draw their tree per step


def test_greedy_hydra_is_token_for_token_vanilla(engine, tmp_path):
    """Lossless with any sequential heads: random ones and a branching tree."""
    torch.manual_seed(0)
    hydra = MedusaHeads(load_heads().config.model_copy(update={"sequential": True}))
    for module in (*hydra.token_proj, *(block[0].linear for block in hydra.blocks)):
        torch.nn.init.normal_(module.weight, std=0.02)
    hydra.save(tmp_path)
    want = [_tokens(engine, p, 24) for p in PROMPTS[:2]]
    step = enable_medusa(engine, tmp_path, tree=[(0,), (1,), (0, 0), (0, 1), (1, 0), (0, 0, 0)],
                         drawn=False)
    try:
        got = [_tokens(engine, p, 24) for p in PROMPTS[:2]]
    finally:
        engine.step = vanilla_step
    assert got == want and step.steps > 0


def test_generated_hidden_states_are_teacher_forced_and_self_consistent(engine, tmp_path):
    """Answers from an engine, hidden states from one padded forward over prompt + answer."""
    prompts = [Prompt(id=i, category="chat", split="train", prompt=p)
               for i, p in enumerate(PROMPTS[:2])]
    assert generate(engine, engine, tmp_path, max_new_tokens=12, batch_size=2,
                    prompts=prompts) == 2
    assert generate(engine, engine, tmp_path, max_new_tokens=12, prompts=prompts) == 0  # cached
    sequences = load_sequences(tmp_path)
    assert [s.id for s in sequences] == [0, 1]
    answers = engine.chat([chat(p.prompt) for p in prompts], SamplingParams(max_tokens=12))
    ended = [min(engine.eos_ids)]
    for seq, answer in zip(sequences, answers, strict=True):  # the model's ids, EOS if it ended
        assert seq.tokens == answer.token_ids + (ended if answer.finish_reason == "stop" else [])
    weight = engine.model.get_output_embeddings().weight
    hits = total = 0
    for prompt, seq in zip(prompts, sequences, strict=True):
        assert seq.hidden.shape == (len(seq.tokens), engine.model.config.hidden_size)
        ids = encode_prompt(engine.tokenizer, chat(prompt.prompt), engine.context_len)
        with torch.inference_mode():  # the prompt alone, final norm applied
            want = engine.model.get_decoder()(input_ids=torch.tensor([ids])).last_hidden_state
        # stored as float16 (values up to ~35), so allow one fp16 step besides atol
        torch.testing.assert_close(seq.hidden[0].float(), want[0, -1].half().float(),
                                   atol=1e-3, rtol=1e-3)
        with torch.inference_mode():
            predicted = (seq.hidden.float() @ weight.T).argmax(-1)
        hits += int((predicted == torch.tensor(seq.tokens)).sum())
        total += len(seq.tokens)
    assert hits >= 0.9 * total


def test_int8_draft_projection_ranks_tokens_like_the_exact_lm_head(local_engine):
    """Drafts project through an int8 copy of the lm_head. On the model's real hidden states
    its top-1 is among the exact top 5 nearly everywhere (measured 99.7% of 1065 positions; the
    exact top-1 itself 88%, where the top logits nearly tie). Output stays exact regardless:
    verification recomputes fp32 logits."""
    from manyheads.models.local.prepack import int8_projection

    weight = local_engine.model.get_output_embeddings().weight.detach()
    ids = encode_prompt(local_engine.tokenizer,
                        chat("Explain in three sentences how a bicycle gear works."),
                        local_engine.context_len)
    with torch.no_grad():
        hidden = local_engine.model(torch.tensor([ids]), output_hidden_states=True
                                    ).hidden_states[-1][0]  # [T, H]
    exact = torch.nn.functional.linear(hidden, weight)  # [T, V]
    draft = int8_projection(weight)(hidden)
    assert draft.shape == exact.shape
    top5 = exact.topk(5, dim=-1).indices  # [T, 5]
    assert (top5 == draft.argmax(-1)[:, None]).any(-1).float().mean() >= 0.95
    assert (draft.argmax(-1) == exact.argmax(-1)).float().mean() >= 0.75
    one = int8_projection(weight)(hidden[0])  # a single row [H] -> [V]
    assert one.shape == (weight.shape[0],)


def test_heads_draft_only_their_vocabulary_and_keep_it_on_disk(tmp_path):
    """Training keeps the most frequent answer tokens as the draft vocabulary; it travels with
    the checkpoint, and guesses (int8 copy of those lm_head rows) never leave it."""
    from manyheads.models.medusa.training.train import draft_vocabulary

    targets = torch.tensor([[3, 3], [5, -100], [3, 7]])
    assert draft_vocabulary(targets, 2).tolist() == [3, 5]
    assert draft_vocabulary(targets, 10).tolist() == [3, 5, 7]
    torch.manual_seed(0)
    heads = MedusaHeads(MedusaConfig(num_heads=2, hidden_size=8, vocab_size=32, draft_vocab=4))
    heads.draft_tokens.copy_(torch.tensor([5, 9, 2, 30]))
    heads.save(tmp_path)
    loaded = load_heads(tmp_path)
    assert loaded.draft_tokens.tolist() == [5, 9, 2, 30]
    lm_head = torch.nn.Linear(8, 32, bias=False)
    loaded.prepare_drafts(lm_head.weight)
    feats = 8 * torch.nn.functional.normalize(lm_head.weight[[9, 30, 11]], dim=-1)  # 11: not
    top = loaded.guesses(0, feats, lm_head, 2)  # [3, 2] token ids
    assert set(top.flatten().tolist()) <= {5, 9, 2, 30} and top[:2, 0].tolist() == [9, 30]
    scored = loaded.only_drafted(lm_head(feats))
    assert torch.isinf(scored[:, 11]).all() and torch.equal(scored.argmax(-1), top[:, 0])


def test_choose_tree_data_answers_only_held_out_prompts(engine, tmp_path):
    """`eval` and `choose-tree` read the eval split only, so that is all they generate."""
    from manyheads.cli.medusa import _ensure_data

    _ensure_data(engine, tmp_path, max_new_tokens=4, batch_size=2, limit=2, split="eval")
    records = [json.loads(line) for line in (tmp_path / "tokens.jsonl").read_text().splitlines()]
    assert len(records) == 2 and {r["split"] for r in records} == {"eval"}


def test_forward_costs_never_fall_as_the_pass_grows(engine):
    from manyheads.models.medusa.step import heads_for
    from manyheads.models.medusa.training.choose import draft_cost, forward_costs

    costs = forward_costs(engine.model, [1, 2, 4, 8], prefix=16, repeats=2)
    assert list(costs) == [1, 2, 4, 8]
    assert all(costs[a] <= costs[b] for a, b in zip([1, 2, 4], [2, 4, 8], strict=True))
    assert draft_cost(heads_for(engine), engine.model, repeats=2) > 0


def test_choose_tree_charges_the_heads_drafting_per_tree_depth():
    """A deeper tree waits for one more round of drafting per level: when that is dear the
    choice stays shallow, and the table's cost says what was charged."""
    from manyheads.models.medusa.training.choose import choose_tree

    # 100 positions, 3 heads: head 0 right (rank 0) on 80, head 1 then on 60, head 2 on 50;
    # head 0's second guess right on 10
    ranks = torch.full((100, 3), -1)
    ranks[:80, 0], ranks[:60, 1], ranks[:50, 2] = 0, 0, 0
    ranks[80:90, 0] = 1
    costs = {1: 1.0, 2: 1.05, 3: 1.1, 4: 1.15}
    free = choose_tree(ranks, costs)
    assert free["tree"] == [[0], [0, 0], [0, 0, 0]]
    dear = choose_tree(ranks, costs, depth_cost=0.5)  # half a pass per level
    assert dear["tree"] == [[0]]
    for row in dear["table"]:
        depth = max((len(p) for p in row["tree"]), default=0)
        assert row["cost_s"] == pytest.approx(costs[row["nodes"]] + 0.5 * depth)


def test_teacher_rows_point_at_the_state_that_predicts_each_target():
    """Distillation's soft target for head i at row j is the base's distribution at the state
    that predicts tokens[j+i+1]: row j+i+1 of the same sequence, never one of the next."""
    from manyheads.models.medusa.training.data import Sequence, features, teacher_rows

    seqs = [Sequence(id=i, split="train", tokens=t, hidden=torch.zeros(len(t), 4))
            for i, t in enumerate([[5, 6, 7, 8], [9], [10, 11, 12]])]
    _, targets, _ = features(seqs, 3)
    rows = teacher_rows(seqs, 3)
    predicted = torch.tensor([t for s in seqs for t in s.tokens])  # row r predicts this
    assert rows.shape == targets.shape
    assert torch.equal(rows >= 0, targets != -100)
    assert torch.equal(predicted[rows[rows >= 0]], targets[targets != -100])


def test_distilling_from_a_certain_teacher_is_training_on_its_tokens():
    from manyheads.models.medusa.training.train import distill_loss, head_loss

    torch.manual_seed(0)
    logits = torch.randn(2, 5, 7)  # [K, B, V]
    targets = torch.randint(0, 7, (5, 2))
    targets[3:, 1] = -100
    certain = 1e4 * torch.nn.functional.one_hot(targets.clamp_min(0), 7).float()  # [B, K, V]
    got = distill_loss(logits, certain.transpose(0, 1), targets != -100, 0.8)
    assert got == pytest.approx(float(head_loss(logits, targets, 0.8)), rel=1e-5)


def test_distilled_training_runs_from_a_work_folder_and_says_so(tmp_path):
    """The whole `train` path on a tiny cached folder (random states, 3-token vocabulary
    shared with a random lm_head): distillation fits, and the checkpoint records it."""
    from safetensors.torch import save_file

    from manyheads.models.medusa.training.train import TrainConfig, train

    torch.manual_seed(0)
    weight = torch.randn(12, 8)
    lines, tensors = [], {}
    for i in range(6):
        hidden = torch.randn(9, 8)
        tokens = (hidden @ weight.T).argmax(-1).tolist()  # the base's own greedy tokens
        tensors[f"p{i}"] = hidden.half()
        lines.append(json.dumps({"id": i, "split": "train", "category": "chat",
                                 "prompt_ids": [1], "tokens": tokens}))
    save_file(tensors, str(tmp_path / "hidden-00000.safetensors"))
    (tmp_path / "tokens.jsonl").write_text("\n".join(lines) + "\n")
    config = TrainConfig(num_heads=2, epochs=40, batch_size=16, lr=1e-2, warmup_steps=2,
                         distill=True, sequential=True, draft_vocab=0, checkpoint_every=1000)
    seen = []
    heads = train(tmp_path, tmp_path / "out", weight, config, embed_weight=torch.randn(12, 8),
                  progress=lambda step, total, loss: seen.append(loss))
    assert heads.config.training["distill"] is True
    assert load_heads(tmp_path / "out").config.training["distill"] is True
    assert sum(seen[-5:]) < sum(seen[:5])
