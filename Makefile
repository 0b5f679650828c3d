# expt: two commands on a fresh machine with only Python: `make run`, `make test`.
VENV    ?= .venv
PYTHON  ?= python3
PY      := $(VENV)/bin/python
STAMP   := $(VENV)/.installed
DEMO    ?= outputs/demo

.PHONY: help install run test test-fast bench kb lint docs docs-serve clean

help:  ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-10s %s\n", $$1, $$2}'

# torch first, pinned to the CPU build on local disk: an unpinned torch pulls a multi-GB CUDA build. The boosting
# extra (LightGBM, XGBoost's CPU build, CatBoost) is part of every install here: the tests cover those models.
# The docs extra (MkDocs, Material, mkdocstrings) too: `make test` builds the site and runs its commands.
$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e '.[dev,boosting,cluster,docs]'
	touch $(STAMP)

install: $(STAMP)  ## create .venv and install expt with its dev tools

run: $(STAMP)  ## run the demo experiment (wine, SVM, 10-fold CV) into outputs/demo
	mkdir -p $(DEMO)
	cd $(DEMO) && $(CURDIR)/$(VENV)/bin/expt train conf=$(CURDIR)/recipes/wine_svm.yaml

# One pytest-xdist worker per core the tests may use (`-n logical`: os.sched_getaffinity, as expt counts cores; `auto`
# counts physical cores when psutil is installed, which can be 1 on a 2-vCPU VM), at most 8: each worker holds
# torch, MLflow and scikit-learn (400 MB resident). How the tests are shared out: pyproject.toml's addopts
# (--dist loadfile). TEST_WORKERS=0 runs the suite in one process.
TEST_WORKERS ?= logical
PYTEST  := $(PY) -m pytest -q -n $(TEST_WORKERS) --maxprocesses 8

test: $(STAMP)  ## the whole test suite (the type checker and import contracts too), one pytest-xdist worker per core
	$(PYTEST)

test-fast: $(STAMP)  ## the tests without the slow end-to-end ones
	$(PYTEST) -m "not slow"

bench: $(STAMP)  ## run every benchmark in benchmarks/ and print each comparison as a ratio
	$(PY) -m pip install -q -e '.[dev,bench,boosting,cluster]'
	@for f in benchmarks/bench_*.py; do echo "== $$f"; $(PY) $$f || exit 1; done

kb: $(STAMP)  ## build expt/kb/records.jsonl.gz from recipes/kb/ in pieces of 2 h: run again to continue (shards in recipes/kb/shards/)
	$(PY) -m expt.kb --stop-after 120 $(KB_ARGS)

lint: $(STAMP)  ## ruff over the code, tests, benchmarks and docs hooks; the type checker (mypy); the import contracts
	$(VENV)/bin/ruff check expt tests benchmarks docs/hooks
	$(VENV)/bin/mypy
	$(VENV)/bin/lint-imports

# The docs site (mkdocs.yml): the reference pages are generated from the code at each build; nothing is fetched.
# NO_MKDOCS_2_WARNING: Material's banner about its successor, printed at every build otherwise.
docs: $(STAMP)  ## build the docs site into site/ (offline, --strict)
	NO_MKDOCS_2_WARNING=1 $(VENV)/bin/mkdocs build --strict

docs-serve: $(STAMP)  ## serve the docs site on 127.0.0.1:8000, rebuilt as docs/, expt/ or conf/ change
	NO_MKDOCS_2_WARNING=1 $(VENV)/bin/mkdocs serve

clean:  ## remove the virtual environment and outputs
	rm -rf $(VENV) outputs .pytest_cache
