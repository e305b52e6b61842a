# Two commands do all the set-up: `make demo` and `make test`.
# TORCH_SPEC picks the PyTorch build that is installed first (before anything
# else, so pip never pulls a different one). The default is the CPU wheel these
# machines carry; with a GPU, e.g.:
#   make test TORCH_SPEC="torch --index-url https://download.pytorch.org/whl/cu124"
PYTHON ?= python3
VENV ?= .venv
TORCH_SPEC ?= torch==2.13.0
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
PYTEST_ARGS ?= -n 2

.PHONY: venv install install-dev browser demo test lint bench clean

$(PY):
	$(PYTHON) -m venv $(VENV)

venv: $(PY)
	@$(PY) -c "import torch" 2>/dev/null || $(PIP) install $(TORCH_SPEC)

install: venv
	$(PIP) install -q -e ".[demo]"

install-dev: venv
	$(PIP) install -q -e ".[dev,demo]"

demo: install
	$(VENV)/bin/attnkit demo

# Debian's Chromium for the browser tests (tests marked `browser`); never fails: without
# root or apt-get those tests are reported as not run.
APT_CHROMIUM := DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends chromium
browser:
	@command -v chromium >/dev/null || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null \
		&& { $(APT_CHROMIUM) || { apt-get update -q && $(APT_CHROMIUM); }; } \
		|| echo "chromium not installed: browser tests will be reported as not run"; }

test: install-dev browser
	$(PY) -m pytest $(PYTEST_ARGS)

lint: install-dev
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

bench: install
	$(VENV)/bin/attnkit bench attention --output bench-results

clean:
	rm -rf $(VENV) build dist src/*.egg-info .pytest_cache .ruff_cache
