#!/usr/bin/env bash
# Vanilla vs drafting decoders of the embedded model on a lent GPU (bench/gpu_check.py).
#
# The device machine has PyTorch and transformers, not our other dependencies, and each call
# carries at most 64 MiB; the model (a 98 MB GGUF) goes in two halves:
#   here:          bash bench/gpu_check.sh pack       # .gpu/part-a + .gpu/site, .gpu/part-b
#   device call 1: carry [".gpu/part-a", ".gpu/site"]  command: bash bench/gpu_check.sh stash
#   device call 2: carry [".gpu/part-b"]               command: bash bench/gpu_check.sh run
# `stash` copies what came into .gpu-stash/ (ignored, so it stays on the warm machine);
# `run` joins the halves and measures within 8 minutes, writing $OUT/gpu_check.json.
set -euo pipefail
cd "$(dirname "$0")/.."
case "${1:-}" in
  pack)
    py=.venv/bin/python
    gguf=$($py -c "from manyheads.models.embedded import embedded_gguf; print(embedded_gguf())")
    site=$($py -c "import sysconfig; print(sysconfig.get_paths()['purelib'])")
    rm -rf .gpu && mkdir -p .gpu/site
    half=$(( $(stat -c %s "$gguf") / 2 ))
    head -c "$half" "$gguf" > .gpu/part-a
    tail -c +"$((half + 1))" "$gguf" > .gpu/part-b
    for pkg in pydantic pydantic_core typing_extensions.py typing_inspection annotated_types gguf; do
      cp -r "$site/$pkg" .gpu/site/
    done
    du -sh .gpu/*
    ;;
  stash)
    mkdir -p .gpu-stash && cp -r .gpu/. .gpu-stash/ && du -sh .gpu-stash/*
    ;;
  run)
    cp .gpu/part-b .gpu-stash/ 2>/dev/null || true
    mkdir -p .gpu-stash/model
    cat .gpu-stash/part-a .gpu-stash/part-b > .gpu-stash/model/SmolLM2-135M-Instruct.Q4_1.gguf
    nvidia-smi -L || true
    PYTHONPATH=.gpu-stash/site timeout 480 python bench/gpu_check.py \
      --gguf .gpu-stash/model/SmolLM2-135M-Instruct.Q4_1.gguf --out "${OUT:-bench/results}/gpu_check.json" "${@:2}"
    ;;
  *)
    echo "usage: bash bench/gpu_check.sh pack|stash|run" >&2
    exit 2
    ;;
esac
