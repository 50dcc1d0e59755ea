"""Batch generation through a chat room (SPP here): stored sessions, resume, files."""

from __future__ import annotations

import json

import datasets
import pytest

from manyheads.errors import ConfigError
from manyheads.orchestration.conversation import ChatOptions
from manyheads.orchestration.harness.generate import (
    chat_quality,
    export,
    generate_chat,
    load_prompts,
)
from manyheads.orchestration.registry import get_room
from manyheads.storage import Store

OPTIONS = ChatOptions(config={"max_rounds": 1, "max_tokens": 24, "note_tokens": 16})


def test_spp_dataset_resumes_and_exports_every_format(local_engine, tmp_path):
    room = get_room("spp")
    prompts = ["Name two red fruits.", "Name a planet with rings."]
    with Store.open(f"sqlite:///{tmp_path}/gen.db") as store:
        # sessions a killed or interrupted job left without an item: dropped, made again
        store.create_session("spp", title="x", config={"dataset": "t", "key": "000001"})
        failed = store.create_session("spp", title="y", config={"dataset": "t", "key": "000000"})
        store.set_status(failed.id, "failed")  # e.g. Ctrl-C mid-turn
        first = generate_chat(local_engine, store, room, prompts[:1], name="t", options=OPTIONS)
        assert first == {"dataset_id": first["dataset_id"], "skipped": 0, "generated": 1,
                         "dropped_partial": 2}
        with pytest.raises(ConfigError, match="other prompts or settings"):
            generate_chat(local_engine, store, room, prompts, name="t", options=OPTIONS)
        again = generate_chat(local_engine, store, room, prompts[:1], name="t", options=OPTIONS)
        assert again["generated"] == 0 and again["skipped"] == 1
        assert [s.status for s in store.list_sessions(room="spp")] == ["completed"]
        result = export(store, "t", tmp_path / "out")
    assert result["formats"] == ["jsonl", "parquet", "hf_datasets"]
    rows = [json.loads(line) for line in (tmp_path / "out" / "spp.jsonl").read_text().splitlines()]
    assert rows[0]["prompt"] == prompts[0] and rows[0]["final"]
    assert rows[0]["messages"][0]["speaker"] == "you"
    loaded = datasets.load_from_disk(str(tmp_path / "out" / "hf_dataset"))
    assert loaded.num_rows == 1 and loaded[0]["key"] == "000000"
    assert "spp" in (tmp_path / "out" / "README.md").read_text()
    metrics = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert metrics == result["metrics"] and metrics["utterances"] >= 2  # persona notes, draft
    for key in ("trimmed_rate", "mid_sentence_rate", "repeated_sentence_rate",
                "instruction_echo_rate", "distinct_1", "distinct_2", "mean_words"):
        assert 0 <= metrics[key] <= (1 if key != "mean_words" else 200), key
    assert "invalid_name_rate" not in metrics  # SPP writes no people's names
    assert "mid_sentence_rate" in (tmp_path / "out" / "README.md").read_text()


def test_prompt_files_name_the_bad_line(tmp_path):
    path = tmp_path / "p.jsonl"
    path.write_text('{"prompt": "ok"}\n{"prompt": ""}\n')
    with pytest.raises(ConfigError, match=r"p.jsonl:2: needs a non-empty"):
        load_prompts(path)
    path.write_text('{"question": "fine"}\nnot json\n')
    with pytest.raises(ConfigError, match=r"p.jsonl:2: not JSON"):
        load_prompts(path)


def _message(content, meta, role="assistant", visibility="public"):
    return {"speaker": "x", "role": role, "content": content, "visibility": visibility,
            "meta": meta, "step_scores": None}


def test_chat_quality_counts_free_text_turns_and_written_names():
    good = {"messages": [
        _message("cooking rota", {}, role="user"),
        _message("A scene.", {"names": ["Maya Lin", "Tom Berg"]}),
        _message("We could share it. We could share it.", {"hygiene": []}),
        _message("It is not my", {"hygiene": ["mid_sentence"]}),
        _message("Participants: Expert (knows things)", {"stage": "identify"}),  # a notice
        _message("Hidden.", {"hygiene": []}, visibility="observer")]}
    bad = {"messages": [_message("A scene.", {"names": ["Creating a lifestyle of:", "Tom"]}),
                        _message("Fine, I agree.", {"hygiene": ["trimmed"]})]}
    metrics = chat_quality([good, bad])
    assert metrics["utterances"] == 3
    assert metrics["mid_sentence_rate"] == metrics["trimmed_rate"] == round(1 / 3, 4)
    assert metrics["repeated_sentence_rate"] == round(1 / 4, 4)
    assert metrics["invalid_name_rate"] == 0.5
    assert "invalid_name_rate" not in chat_quality([{"messages": good["messages"][2:]}])
