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

.PHONY: report test bench lint docs venv clean

$(BIN)/python:
	$(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q $(TORCH)

$(STAMP): $(BIN)/python pyproject.toml
	$(BIN)/python -m pip install -q $(TORCH) -e '.[$(EXTRAS)]'
	touch $@

venv: $(STAMP)

report: $(STAMP)
	$(BIN)/tying report --size report --jobs $(JOBS) --out report

# one pytest worker process per job (pytest-xdist); `make test JOBS=1` runs in one process
test: $(STAMP)
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
