"""Every command keeps its files under ``MANYHEADS_HOME`` unless told otherwise."""

from __future__ import annotations

from manyheads.cli.uhead import default_data


def test_uhead_shards_default_to_manyheads_home(tmp_path, monkeypatch):
    monkeypatch.setenv("MANYHEADS_HOME", str(tmp_path))
    assert default_data() == tmp_path / "uhead"
