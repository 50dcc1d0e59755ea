"""The embedded model: resolved from the wheel, converted once, atomically, with clear errors."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from manyheads.errors import ModelNotFoundError
from manyheads.models.embedded import embedded_gguf, resolve_model


def test_default_model_resolves_to_a_loadable_folder():
    folder = resolve_model()
    config = json.loads((folder / "config.json").read_text())
    assert config["model_type"] == "llama"
    assert "quantization_config" not in config  # vLLM refuses "gguf" quantisation
    assert (folder / "model.safetensors").is_file() and (folder / "tokenizer.json").is_file()
    assert resolve_model("HuggingFaceTB/SmolLM2-135M-Instruct") == folder
    assert resolve_model(folder) == folder  # a local folder is used as it is


def test_corrupt_gguf_is_a_clear_error_and_leaves_nothing(tmp_path: Path):
    bad = tmp_path / "broken.gguf"
    bad.write_bytes(b"GGUF" + os.urandom(256))
    with pytest.raises(ModelNotFoundError, match="cannot read GGUF"):
        resolve_model(bad, home=tmp_path / "home")
    assert list((tmp_path / "home" / "models").iterdir()) == []


@pytest.mark.parametrize("name", ["no-such-org/no-such-model", "/definitely/not/here.gguf"])
def test_unknown_models_are_refused(name: str):
    with pytest.raises(ModelNotFoundError):
        resolve_model(name)


def test_folder_without_config_is_refused(tmp_path: Path):
    with pytest.raises(ModelNotFoundError, match="config.json"):
        resolve_model(tmp_path)


def test_killed_conversion_leaves_no_model_and_is_cleaned_up(tmp_path: Path):
    home = tmp_path / "home"
    code = "from manyheads.models.embedded import resolve_model; resolve_model()"
    env = {**os.environ, "MANYHEADS_HOME": str(home)}
    child = subprocess.Popen([sys.executable, "-c", code], env=env)
    models = home / "models"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and not list(models.glob(".*")):
        time.sleep(0.2)
    time.sleep(2)  # let it get into the conversion
    child.send_signal(signal.SIGKILL)
    child.wait()
    assert [p for p in models.iterdir() if not p.name.startswith(".")] == []
    # The next conversion removes the dead process's temporary folder and finishes.
    gguf = embedded_gguf()
    assert gguf.is_file()
    from manyheads.models.embedded import _remove_abandoned
    from manyheads.settings import DEFAULT_MODEL

    _remove_abandoned(models, DEFAULT_MODEL)
    assert list(models.iterdir()) == []
