# expt: two commands on a fresh machine with only Python: `make run`, `make test`.
VENV    ?= .venv
PYTHON  ?= python3
PY      := $(VENV)/bin/python
STAMP   := $(VENV)/.installed
DEMO    ?= outputs/demo

.PHONY: help install run test test-fast bench kb lint clean

help:  ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-10s %s\n", $$1, $$2}'

# torch first, pinned to the CPU build on local disk: an unpinned torch pulls a multi-GB CUDA build. The boosting
# extra (LightGBM, XGBoost's CPU build, CatBoost) is part of every install here: the tests cover those models.
$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e '.[dev,boosting]'
	touch $(STAMP)

install: $(STAMP)  ## create .venv and install expt with its dev tools

run: $(STAMP)  ## run the demo experiment (wine, SVM, 10-fold CV) into outputs/demo
	mkdir -p $(DEMO)
	cd $(DEMO) && $(CURDIR)/$(VENV)/bin/expt train conf=$(CURDIR)/recipes/wine_svm.yaml

test: $(STAMP)  ## run the whole test suite
	$(PY) -m pytest -q

test-fast: $(STAMP)  ## the tests without the slow end-to-end ones
	$(PY) -m pytest -q -m "not slow"

bench: $(STAMP)  ## run every benchmark in benchmarks/ and print each comparison as a ratio
	$(PY) -m pip install -q -e '.[dev,bench,boosting]'
	@for f in benchmarks/bench_*.py; do echo "== $$f"; $(PY) $$f || exit 1; done

kb: $(STAMP)  ## build expt/kb/records.jsonl.gz from recipes/kb/ in pieces of 2 h: run again to continue (shards in recipes/kb/shards/)
	$(PY) -m expt.kb --stop-after 120 $(KB_ARGS)

lint: $(STAMP)  ## ruff over the code, tests and benchmarks; the import contracts (layers, no cycles)
	$(VENV)/bin/ruff check expt tests benchmarks
	$(VENV)/bin/lint-imports

clean:  ## remove the virtual environment and outputs
	rm -rf $(VENV) outputs .pytest_cache
