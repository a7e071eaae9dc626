# Set-up is part of every target: the first run creates .venv and installs the project (torch
# included, ~1.5 min); later runs reuse it.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo lint test test-all bench fashion-mnist

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q -e '.[test]'
	touch $(STAMP)

# Fashion-MNIST offline: Debian's package when it is missing and apt is usable;
# otherwise the loader downloads it on first use.
fashion-mnist:
	@if [ ! -d /usr/share/datasets/fashion-mnist ] && command -v apt-get >/dev/null && [ "$$(id -u)" = 0 ]; then \
		(apt-get install -y -q dataset-fashion-mnist || (apt-get update -q && apt-get install -y -q dataset-fashion-mnist)) >/dev/null; \
	fi

# The demo's data: a local CIFAR-10 ImageFolder archive when there is one (offline), else the
# torchvision CIFAR-10 download.
CIFAR10 ?= $(firstword $(wildcard ../shared/data/cifar10-jpeg.tar.gz) cifar10)

demo: $(STAMP)
	$(BIN)/unlearnable demo --data $(CIFAR10)

# Lint, format and types first (seconds), then the tests.
lint: $(STAMP)
	$(BIN)/ruff check src tests bench
	$(BIN)/ruff format --check src tests bench
	$(BIN)/mypy

test: lint
	$(BIN)/python -m pytest -q

test-all: lint
	$(BIN)/python -m pytest -q -m ""

bench: $(STAMP)
	$(BIN)/python bench/bench_cli_startup.py
	$(BIN)/python bench/bench_cuda.py
	$(BIN)/python bench/bench_defenses.py
	$(BIN)/python bench/bench_iss_coin.py
	$(BIN)/python bench/bench_poisons.py
	$(BIN)/python bench/bench_dune.py
	$(BIN)/python bench/bench_training_defenses.py
	$(BIN)/python bench/bench_deconv.py
	$(BIN)/python bench/bench_distributed.py
	$(BIN)/python bench/bench_store.py
