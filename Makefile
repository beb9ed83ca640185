# Two commands on a fresh machine: `make run` and `make test`.
PY      ?= python3
VENV    := .venv
BIN     := $(VENV)/bin
export DO_NOT_TRACK := 1
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false

.PHONY: run test fast install install-test clean browser tools

# uv installs in seconds what pip takes a minute and a half for; it reads pip's find-links (where the
# CPU build of torch lies on these machines) from PIP_FIND_LINKS. Without one, torch comes through pip,
# whose own configuration knows where the CPU build is.
# --compile-bytecode: uv, unlike pip, leaves the .pyc files to the first import, and where PYTHONDONTWRITEBYTECODE
# is set (as on the CI machines) no import ever writes them: every process of the suite (two workers and each
# `nlpmon` it runs) would compile torch, transformers and Evidently from source again, 10-20 s of CPU apiece.
UV := $(BIN)/uv pip install -q --compile-bytecode --python $(BIN)/python
export UV_FIND_LINKS ?= $(PIP_FIND_LINKS)

$(BIN)/python:
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q uv

# torch first and pinned: a bare torch requirement would pull the CUDA build.
$(VENV)/.installed: setup.cfg pyproject.toml | $(BIN)/python
	if [ -n "$$UV_FIND_LINKS" ]; then $(UV) torch==2.13.0; else $(BIN)/pip install -q torch==2.13.0; fi
	$(UV) -e '.[test]'
	touch $@

install: $(VENV)/.installed

# The port opens at once; the demo's history loads in the background, its progress shown on the pages.
run: install
	$(BIN)/nlpmon db upgrade
	$(BIN)/nlpmon serve --demo --host 127.0.0.1 --port 8080

# The tests drive real programs from Debian's packages (no downloads: the machines have no internet):
# Chromium for the pages, promtool for /metrics, Alertmanager for the alertmanager receiver.
# A fresh machine's package lists may be empty: install, and on failure update the lists and retry.
# Where apt-get exists, failing to install is an error, so CI never skips those tests silently.
APT := $(shell [ "$$(id -u)" = 0 ] && echo apt-get || echo sudo apt-get)
DEBIAN_TOOLS := /usr/bin/chromium:chromium /usr/bin/promtool:prometheus /usr/bin/prometheus-alertmanager:prometheus-alertmanager
tools:
	@missing=""; for pair in $(DEBIAN_TOOLS); do [ -x "$${pair%%:*}" ] || missing="$$missing $${pair#*:}"; done; \
	if [ -z "$$missing" ]; then exit 0; fi; \
	if ! command -v apt-get >/dev/null; then echo "no apt-get to install$$missing: the tests that drive them will skip"; exit 0; fi; \
	export DEBIAN_FRONTEND=noninteractive; \
	$(APT) install -y -q --no-install-recommends $$missing >/dev/null 2>&1 || \
	  { echo "installing$$missing failed; updating the package lists and retrying" >&2; \
	    $(APT) update -q >/dev/null && $(APT) install -y -q --no-install-recommends $$missing >/dev/null; } || \
	  { echo "could not install Debian's$$missing, which the tests need" >&2; exit 1; }

browser: tools

test: install tools
	$(BIN)/python -m pytest -q -n 2 --dist loadgroup

# The fast tier: tests that need no store, server or model (marked `fast`), for a quick check of a change.
fast: install
	$(BIN)/python -m pytest -q -m fast -p no:cacheprovider

clean:
	rm -rf $(VENV) var *.egg-info
