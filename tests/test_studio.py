"""The AutoStudio room: box maths, the supervisor, drawers, the dialogue set, sessions, resume."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
from langgraph.checkpoint.memory import InMemorySaver

from manyheads.errors import ConfigError, ModelNotFoundError
from manyheads.models.engine import Engine
from manyheads.models.types import Completion
from manyheads.orchestration.conversation import ChatOptions
from manyheads.orchestration.registry import get_room
from manyheads.orchestration.room import RoomContext
from manyheads.orchestration.rooms.studio import ROOM
from manyheads.orchestration.rooms.studio import graph as studio_graph
from manyheads.orchestration.rooms.studio.agents import apply_edits, read_turn
from manyheads.orchestration.rooms.studio.draw import (
    DiffusersDrawer,
    SketchDrawer,
    crop,
    pixel_embedding,
    similarity,
    subject_consistency,
)
from manyheads.orchestration.rooms.studio.eval import load_dialogues, run_eval, score_session
from manyheads.orchestration.rooms.studio.graph import StudioConfig, build_graph
from manyheads.orchestration.rooms.studio.layout import (
    Box,
    Layout,
    Subject,
    coverage,
    layout_issues,
    layout_metrics,
    repair,
)
from manyheads.storage import Store

DOG = Subject(id="s1", name="dog", description="brown dog")
CAT = Subject(id="s2", name="cat", description="small cat")
HAT = Subject(id="s3", name="hat", description="red hat", parent_id="s1")


class FakeSilentEngine(Engine):
    """Answers nothing usable, so every agent takes its deterministic fallback (control flow)."""

    name = "fake"

    def _run(self, requests):
        return [Completion(text="no idea", finish_reason="stop") for _ in requests]

    async def _stream(self, request):
        yield "no idea"


class FakeBrokenDrawer:
    """A drawer that dies like a killed process would, to cut a turn short (patched in for
    ``make_drawer``: the room builds its drawer from ``StudioConfig.drawer``)."""

    def draw(self, layout, subjects, seed):
        raise KeyboardInterrupt


def box(x0: float, y0: float, x1: float, y1: float) -> Box:
    return Box(x0=x0, y0=y0, x1=x1, y1=y1)


# -- boxes and the supervisor -------------------------------------------------------------------
def test_box_converts_between_pixel_xywh_and_normalised_xyxy() -> None:
    b = Box.from_xywh(64, 32, 128, 96, 256, 128)
    assert b.as_list() == [0.25, 0.25, 0.75, 1.0]
    assert b.to_xywh(256, 128) == pytest.approx((64, 32, 128, 96))
    assert Box.from_xywh(*b.to_xywh(640, 480), 640, 480) == b
    assert box(-0.2, 0.5, 0.5, 1.3).pixels(100, 100) == (0, 50, 50, 100)
    with pytest.raises(ValueError):
        box(0.5, 0, 0.4, 1)


def test_supervisor_flags_out_of_bounds_overlap_missing_and_size() -> None:
    layout = Layout(boxes={"s1": box(0.6, 0.1, 1.2, 0.6), "s2": box(0.7, 0.2, 1.0, 0.5),
                           "s9": box(0, 0, 0.2, 0.2)})
    issues = layout_issues(layout, [DOG, CAT, HAT])
    assert "dog is outside the picture" in issues
    assert "dog and cat overlap too much" in issues
    assert "hat is missing" in issues
    assert "box s9 belongs to no subject" in issues
    assert any("small but its box is large" in i for i in layout_issues(
        Layout(boxes={"s2": box(0, 0, 0.9, 0.9)}), [CAT]))
    fine = Layout(boxes={"s1": box(0.1, 0.1, 0.5, 0.6), "s2": box(0.6, 0.5, 0.9, 0.8),
                         "s3": box(0.2, 0.1, 0.35, 0.25)})  # the hat may overlap its dog
    assert layout_issues(fine, [DOG, CAT, HAT]) == []
    assert layout_metrics(fine, [DOG, CAT, HAT])["valid"] == 1.0
    assert layout_metrics(layout, [DOG, CAT, HAT])["in_bounds"] == 0.5
    assert coverage(fine, [DOG, CAT, HAT], ["dogs", "cat", "horse"]) == pytest.approx(2 / 3)


def test_repair_always_returns_a_valid_layout() -> None:
    rng = random.Random(7)
    words = ["", "small", "big", "tall", "tiny"]
    for trial in range(200):
        count = rng.randint(1, 8)
        subjects = [Subject(id="s0", name="thing0", description=rng.choice(words))]
        for i in range(1, count):
            wholes = [s.id for s in subjects if s.parent_id is None]
            subjects.append(Subject(id=f"s{i}", name=f"thing{i}", description=rng.choice(words),
                                    parent_id=rng.choice(wholes) if rng.random() < 0.2 else None))
        boxes = {s.id: box(a := rng.uniform(-0.3, 0.9), b := rng.uniform(-0.3, 0.9),
                           a + rng.uniform(0, 0.9), b + rng.uniform(0, 0.9))
                 for s in subjects if rng.random() < 0.8}
        fixed = repair(Layout(boxes=boxes), subjects)
        assert layout_issues(fixed, subjects) == [], (trial, fixed)


# -- the subject manager's deterministic reading ------------------------------------------------
def test_turns_add_parts_recolour_remove_and_refer_back() -> None:
    turns = ["A brown dog wearing a red hat sits in a park next to a small cat.",
             "Make the dog blue.", "Remove the cat, and add a yellow ball.",
             "The dog from before chases the ball."]
    subjects, next_id = [], 1
    for turn in turns:
        subjects, next_id = apply_edits(subjects, read_turn(turn, subjects), turn, next_id)
    by_name = {s.name: s for s in subjects}
    assert set(by_name) == {"dog", "hat", "ball"}
    assert by_name["dog"].id == "s1" and by_name["dog"].description == "blue dog"
    assert by_name["hat"].parent_id == "s1"
    assert by_name["ball"].id == "s4"  # ids are never reused


def test_a_removal_needs_removal_words() -> None:
    edits = read_turn("Remove the cat.", [DOG, CAT])
    assert apply_edits([DOG, CAT], edits, "The cat stays.", 3)[0] == [DOG, CAT]
    assert apply_edits([DOG, CAT], edits, "Remove the cat.", 3)[0] == [DOG]


# -- drawers and image metrics ------------------------------------------------------------------
def test_sketch_drawer_gives_each_subject_one_look_in_every_turn() -> None:
    drawer = SketchDrawer(128, 128)
    first = Layout(boxes={"s1": box(0.1, 0.1, 0.5, 0.5), "s2": box(0.6, 0.6, 0.9, 0.9)},
                   background="a park")
    moved = Layout(boxes={"s1": box(0.45, 0.3, 0.85, 0.7), "s2": box(0.1, 0.6, 0.4, 0.9)},
                   background="a park")
    a, again = drawer.draw(first, [DOG, CAT], 0), drawer.draw(first, [DOG, CAT], 5)
    assert a.tobytes() == again.tobytes()
    b = drawer.draw(moved, [DOG, CAT], 0)
    same = subject_consistency([(a, first), (b, moved)])
    assert same["s1"] == pytest.approx(1.0) and same["s2"] == pytest.approx(1.0)
    other = Subject(id="s7", name="dog", description="brown dog")
    c = drawer.draw(first, [other, CAT], 0)
    assert similarity(pixel_embedding(crop(a, first.boxes["s1"])),
                      pixel_embedding(crop(c, first.boxes["s1"]))) < 0.9


def tiny_gligen_pipeline(folder: Path):
    """A randomly initialised GLIGEN text-box pipeline small enough for a CPU test."""
    import torch
    from diffusers import (
        AutoencoderKL,
        DDIMScheduler,
        StableDiffusionGLIGENPipeline,
        UNet2DConditionModel,
    )
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    letters = "abcdefghijklmnopqrstuvwxyz"
    vocab = {"<|startoftext|>": 0, "<|endoftext|>": 1}
    for token in [*letters, *(f"{c}</w>" for c in letters)]:
        vocab[token] = len(vocab)
    (folder / "vocab.json").write_text(json.dumps(vocab))
    (folder / "merges.txt").write_text("#version: 0.2\n")
    tokenizer = CLIPTokenizer(str(folder / "vocab.json"), str(folder / "merges.txt"),
                              model_max_length=32)
    torch.manual_seed(0)
    unet = UNet2DConditionModel(
        block_out_channels=(32, 64), layers_per_block=1, sample_size=16, in_channels=4,
        out_channels=4, down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"), cross_attention_dim=32,
        attention_type="gated", attention_head_dim=8)
    vae = AutoencoderKL(block_out_channels=[32, 64], in_channels=3, out_channels=3,
                        down_block_types=["DownEncoderBlock2D"] * 2,
                        up_block_types=["UpDecoderBlock2D"] * 2, latent_channels=4)
    text_encoder = CLIPTextModel(CLIPTextConfig(
        bos_token_id=0, eos_token_id=1, pad_token_id=1, hidden_size=32, intermediate_size=37,
        num_attention_heads=4, num_hidden_layers=2, vocab_size=len(vocab),
        max_position_embeddings=32, projection_dim=32))
    scheduler = DDIMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                              clip_sample=False, set_alpha_to_one=False)
    return StableDiffusionGLIGENPipeline(
        vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, unet=unet, scheduler=scheduler,
        safety_checker=None, feature_extractor=None, requires_safety_checker=False)


def test_tiny_gligen_pipeline_draws_phrases_in_boxes(tmp_path: Path) -> None:
    pipeline = tiny_gligen_pipeline(tmp_path)
    pipeline.save_pretrained(tmp_path / "gligen")
    drawer = DiffusersDrawer.from_path(tmp_path / "gligen", steps=2, width=32, height=32)
    layout = Layout(boxes={"s1": box(0.0, 0.25, 0.5, 0.75), "s2": box(0.5, 0.5, 1.2, 1.0)},
                    background="a park", caption="a dog and a cat")
    image = drawer.draw(layout, [DOG, CAT], seed=3)
    assert image.size == (32, 32) and image.mode == "RGB"
    assert drawer.draw(layout, [DOG, CAT], seed=3).tobytes() == image.tobytes()
    # the subject's box starts from its own noise, wherever the box is
    noise = drawer.latents(layout, [DOG], 3, __import__("torch"))
    moved = drawer.latents(Layout(boxes={"s1": box(0.5, 0.25, 1.0, 0.75)}), [DOG], 9,
                           __import__("torch"))
    assert (noise[:, :, 4:12, 0:8] == moved[:, :, 4:12, 8:16]).all()
    with pytest.raises(ModelNotFoundError):
        DiffusersDrawer.from_path(tmp_path / "nowhere")


# -- the dialogue set ---------------------------------------------------------------------------
def test_dialogue_set_has_twenty_four_turn_dialogues(tmp_path: Path) -> None:
    dialogues = load_dialogues()
    assert len(dialogues) >= 20 and all(len(d.turns) == 4 for d in dialogues)
    assert len({d.id for d in dialogues}) == len(dialogues)
    bad = tmp_path / "bad.jsonl"
    bad.write_text(dialogues[0].model_dump_json() + "\n" + '{"id": "x", "kind": "poem"}\n')
    with pytest.raises(ConfigError, match=r"bad.jsonl:2: kind"):
        load_dialogues(bad)


# -- sessions -----------------------------------------------------------------------------------
def test_subjects_carry_over_from_turn_to_turn_in_the_checkpointed_state() -> None:
    """Each message is one run of the graph on the thread's checkpointed state (no interrupt):
    the second turn edits the subjects the first one made."""
    graph = build_graph().compile(checkpointer=InMemorySaver())
    context = RoomContext(engine=FakeSilentEngine(), config=StudioConfig())
    run = {"configurable": {"thread_id": "t"}}
    graph.invoke({"request": "A dog next to a cat in a park.", "turn": 0, "history": []}, run,
                 context=context)
    state = graph.get_state(run)
    assert state.next == ()
    assert [s["name"] for s in state.values["subjects"]] == ["dog", "cat"]
    assert all(s["reference"] == 1 for s in state.values["subjects"])  # first drawn in turn 1
    [drawer] = [e for e in state.values["said"] if e["speaker"] == "Drawer"]
    kinds = [(a["kind"], a["mime"], a["meta"]["turn"]) for a in drawer["artifacts"]]
    assert kinds == [("image", "image/png", 1), ("layout", "application/json", 1),
                     ("subjects", "application/json", 1)]
    assert drawer["artifacts"][0]["data"].startswith(b"\x89PNG")
    assert drawer["artifacts"][0]["meta"]["subjects"] == state.values["subjects"]

    graph.invoke({"request": "Make the dog blue, and add a ball.", "turn": 1, "history": []},
                 run, context=context)
    subjects = {s["name"]: s for s in graph.get_state(run).values["subjects"]}
    assert subjects["dog"]["id"] == "s1" and subjects["dog"]["description"] == "blue dog"
    assert subjects["dog"]["reference"] == 1 and subjects["ball"]["reference"] == 2
    said = graph.get_state(run).values["said"]
    assert [e["speaker"] for e in said].count("Drawer") == 2  # ``said`` keeps every turn


def test_a_session_continues_after_a_restart_with_the_same_subjects(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    url = f"sqlite:///{tmp_path / 'studio.db'}"
    engine = FakeSilentEngine()
    with Store.open(url) as store:
        session_id = ROOM.converse(engine, store, None,
                                   "A brown dog sits in a park next to a cat.")
        with monkeypatch.context() as patched, pytest.raises(KeyboardInterrupt):
            # the process dies while drawing turn two
            patched.setattr(studio_graph, "make_drawer", lambda config: FakeBrokenDrawer())
            ROOM.converse(engine, store, session_id, "Make the dog blue.")
        first = store.load(session_id)
    assert first.status == "failed"
    first_turn = next(a for a in first.artifacts if a.kind == "subjects").meta["turn"]
    with Store.open(url) as store:  # a new process: new store, graph and checkpointer objects
        studio = get_room("studio")
        studio.converse(engine, store, session_id, "Add a yellow ball.",
                        listener=None, options=ChatOptions())
        session = store.load(session_id)
    images = sorted((a for a in session.artifacts if a.kind == "image"),
                    key=lambda a: a.meta["turn"])
    assert [a.meta["turn"] for a in images] == [first_turn, 2, 3]
    last = {s["name"]: s for s in images[-1].meta["subjects"]}
    assert last["dog"]["id"] == "s1" and last["dog"]["description"] == "blue dog"
    assert last["ball"]["id"] == "s3" and last["dog"]["reference"] == images[0].meta["turn"]
    assert last["ball"]["reference"] == 3
    assert {"layout", "subjects"} <= set(images[-1].meta)
    assert session.status == "completed"
    drawn = [m for m in session.messages if m.participant == "Drawer"]
    assert [m.meta["image_artifact"] for m in drawn] == [a.id for a in images]
    assert [m.content for m in session.messages if m.role == "user"] == [
        "A brown dog sits in a park next to a cat.", "Make the dog blue.", "Add a yellow ball."]
    keys = [m.idempotency_key for m in session.messages if m.idempotency_key]
    assert len(keys) == len(set(keys)) == len(session.messages)


def test_eval_scores_dialogues_and_writes_contact_sheets(tmp_path: Path) -> None:
    with Store.open(f"sqlite:///{tmp_path / 'eval.db'}") as store:
        summary = run_eval(FakeSilentEngine(), store, tmp_path / "sheets", limit=2)
    assert summary["dialogues"] == 2 and summary["valid"] == 1.0
    assert summary["coverage"] > 0.8 and summary["consistency"] > 0.5
    assert all(Path(row["sheet"]).is_file() for row in summary["rows"])


@pytest.mark.slow
def test_four_turn_session_on_the_embedded_model(local_engine, tmp_path: Path) -> None:
    dialogue = load_dialogues()[0]
    options = ChatOptions(config={"max_tokens": 96, "max_rounds": 1})
    seen = []

    class Collect:
        def status(self, text):
            pass

        def message(self, message):
            seen.append(message.participant)

        def delta(self, speaker, text):
            pass

    with Store.open(f"sqlite:///{tmp_path / 'live.db'}") as store:
        session_id = None
        for turn in dialogue.turns:
            session_id = ROOM.converse(local_engine, store, session_id, turn.text,
                                       listener=Collect(), options=options)
        scores = score_session(store, session_id, dialogue)
        session = store.load(session_id)
    assert scores["turns"] == 4 and scores["valid"] == 1.0
    assert scores["coverage"] >= 0.5 and 0.0 <= scores["consistency"] <= 1.0
    assert seen.count("you") == 4 and seen.count("Drawer") == 4
    assert len([a for a in session.artifacts if a.kind == "image"]) == 4
    print(json.dumps(scores))
