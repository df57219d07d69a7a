# The two commands a fresh machine needs: `make report` and `make test`.
# Each sets up .venv if missing. torch is installed first and pinned, so that
# nothing later pulls a multi-GB CUDA build.
PY      ?= python3
VENV    := .venv
BIN     := $(VENV)/bin
TORCH   := torch==2.13.0
EXTRAS  ?= dev,experiments,bench,chem,privacy,interop,fast
STAMP   := $(VENV)/.installed
JOBS    ?= 2
PYTEST_ARGS ?=

.PHONY: report test bench lint docs venv venv-ok clean

# A .venv whose python is gone (its interpreter removed or upgraded away) is not
# repaired by `python3 -m venv .venv`: it keeps the dangling link, exits 0, and the
# next line failed with "No such file or directory". Say what is wrong instead.
$(BIN)/python:
	@if [ -e $(VENV) ] || [ -L $(VENV) ]; then \
	  echo "make: $(VENV) exists but $(BIN)/python does not run (its interpreter $$(readlink $(BIN)/python3 2>/dev/null || echo '?') is missing): remove it with 'make clean' (or rm -rf $(VENV)) and run make again" >&2; \
	  exit 1; \
	fi
	$(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q $(TORCH)

$(STAMP): $(BIN)/python pyproject.toml
	$(BIN)/python -m pip install -q $(TORCH) -e '.[$(EXTRAS)]'
	touch $@

# The stamp says what was installed once, not that it still imports (a `pip uninstall
# torch`, an interrupted upgrade): then install again, and stop if that does not help.
IMPORTS := import torch, tying.cli
venv-ok: $(STAMP)
	@$(BIN)/python -c "$(IMPORTS)" 2>/dev/null || { \
	  echo "make: $(VENV) does not import torch and tying; installing them again" >&2; \
	  $(BIN)/python -m pip install -q $(TORCH) -e '.[$(EXTRAS)]' && \
	  $(BIN)/python -c "$(IMPORTS)" && touch $(STAMP); }

venv: venv-ok

report: venv-ok
	$(BIN)/tying report --size report --jobs $(JOBS) --out report

# one pytest worker process per job (pytest-xdist); `make test JOBS=1` runs in one process
test: venv-ok
	$(BIN)/python -m pytest -n $(JOBS) $(PYTEST_ARGS)

bench: $(STAMP)
	$(BIN)/python -m benchmarks

docs: $(STAMP)
	$(BIN)/python -m mkdocs build --strict --site-dir site

lint: $(STAMP)
	$(BIN)/ruff check src tests benchmarks examples docs/*.py
	$(BIN)/ruff format --check src tests benchmarks examples docs/*.py  # not the .md pages: their examples keep hand-aligned comments

clean:
	rm -rf $(VENV) report site .pytest_cache
