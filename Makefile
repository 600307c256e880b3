# miscnn_lite: two commands do everything on a fresh machine.
#   make experiment   set up .venv, run the papermill KiTS19-style experiment on phantoms -> results/
#   make test         set up .venv, check notebooks/library are in sync, run every notebook and test
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip --quiet --disable-pip-version-check
STAMP := $(VENV)/.installed
RESULTS ?= results
export PYTHONWARNINGS := ignore::DeprecationWarning
export TF_CPP_MIN_LOG_LEVEL := 2
export PYTHONUTF8 := 1

.PHONY: setup test experiment check-clean check-sync browser clean

setup: $(STAMP)

# torch is pinned to the CPU build that lies on local disk: an unpinned torch pulls a multi-GB CUDA build.
$(STAMP): pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PIP) install "torch==2.13.0" 2> >(grep -v "is ignored: it is neither" >&2)
	$(PIP) install -e ".[dev]" 2> >(grep -v "is ignored: it is neither" >&2)
	touch $(STAMP)

# Chromium (Debian) drives the JupyterLab widget test; installed only when missing.
browser:
	@command -v chromium >/dev/null 2>&1 || (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null)

check-clean: setup
	$(VENV)/bin/nbdev-clean && $(VENV)/bin/nbdev-clean --fname experiments
	git diff --exit-code --stat -- '*.ipynb' || (echo "Notebooks are not clean: run nbdev-clean and commit." && exit 1)

check-sync: setup
	$(VENV)/bin/nbdev-export
	git diff --exit-code --stat -- miscnn_lite || (echo "Library out of sync with nbs/: run nbdev-export and commit." && exit 1)
	test -z "$$(git status --porcelain --untracked-files=all -- miscnn_lite | grep '^??')" || (echo "Untracked exported modules: git add miscnn_lite" && git status --short -- miscnn_lite && exit 1)

test: setup browser check-clean check-sync
	$(VENV)/bin/python -m pytest tests -q -p no:cacheprovider

experiment: setup
	$(VENV)/bin/miscnn-lite experiment --out $(RESULTS)

clean:
	rm -rf $(RESULTS) .pytest_cache
