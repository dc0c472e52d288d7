# Set-up and main entry points. `make demo` and `make test` work on a fresh clone: they create the
# virtual environment, install the package, and use ../shared/data as the data mirror when it exists
# (the library itself defaults to the public addresses).
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
MIRROR ?= $(if $(wildcard ../shared/data/README.md),$(abspath ../shared/data),)
export HASHGNN_DATA_MIRROR := $(or $(HASHGNN_DATA_MIRROR),$(MIRROR))
RUN    ?= runs/lastfm-codes

.PHONY: install demo paper-demo test check lint typecheck package-check bench-retrieval clean

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev]'
	touch $@

# The main job: the best codes recipe on Last.fm (spectral_distill: the spectral reference as teacher,
# 64-bit codes distilled from it) and its test Recall@20/NDCG@20 in the three retrieval modes (the
# continuous row is the reference) next to the Most-Popular baseline. `make paper-demo` trains the
# paper's HashGNN (the authors' recipe) on the same data.
demo: install
	$(BIN)/hashgnn train --config configs/lastfm-codes.yaml --out $(RUN) --overwrite

paper-demo: install
	$(BIN)/hashgnn train --config configs/lastfm-hashgnn.yaml --out runs/lastfm-hashgnn --overwrite

# --dist loadfile: each test file runs on one worker, so a module's expensive fixture (the embedded
# Milvus server, the uvicorn servers) starts once per run, never twice at the same time on fixed ports.
# (pytest 9 renamed the node id that xdist's loadgroup rewrites, so xdist_group marks no longer hold.)
test: install
	$(BIN)/python -m pytest -q -n 2 --dist loadfile tests

# What .ci/run checks before the tests (docs/CONTRIBUTING.md): lint, formatting, types, and the built
# wheel installed into a fresh virtual environment.
check: lint typecheck package-check

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: install
	$(BIN)/mypy

package-check: install
	bash .ci/package-check $(BIN)/python

clean:
	rm -rf $(VENV) runs .pytest_cache .mypy_cache .ruff_cache build dist

# The retrieval speed target of docs/BENCHMARKS.md (10^6 items x 64 bits, k = 100, 1,000 queries).
bench-retrieval: install
	$(BIN)/hashgnn bench retrieval --items 1000000 --bits 64 --queries 1000 --k 100 --json
