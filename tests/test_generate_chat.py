"""Batch generation through a chat room (SPP here): stored sessions, resume, files."""

from __future__ import annotations

import json

import datasets
import pytest

from manyheads.errors import ConfigError
from manyheads.orchestration.conversation import ChatOptions
from manyheads.orchestration.harness.generate import export, generate_chat, load_prompts
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


def test_prompt_files_name_the_bad_line(tmp_path):
    path = tmp_path / "p.jsonl"
    path.write_text('{"prompt": "ok"}\n{"prompt": ""}\n')
    with pytest.raises(ConfigError, match=r"p.jsonl:2: needs a non-empty"):
        load_prompts(path)
    path.write_text('{"question": "fine"}\nnot json\n')
    with pytest.raises(ConfigError, match=r"p.jsonl:2: not JSON"):
        load_prompts(path)
