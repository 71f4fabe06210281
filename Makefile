# Everything the project needs is installed from here: only Python 3.11+ and make are assumed.
# uv is installed with pip into .tools/ and resolves from uv.lock, so nothing is pinned by hand.

PYTHON ?= python3
VENV ?= .venv
TOOLS := .tools
UV := $(TOOLS)/bin/uv
RUN := $(VENV)/bin/python

export UV_PROJECT_ENVIRONMENT := $(VENV)
export UV_PYTHON_DOWNLOADS := never

.PHONY: install install-runtime install-bench install-browser test lint typecheck demo bench clean lock

$(UV):
	$(PYTHON) -m venv $(TOOLS)
	$(TOOLS)/bin/python -m pip install --quiet --disable-pip-version-check uv

lock: $(UV)
	$(UV) lock

install: $(UV)
	$(UV) sync --locked --extra test --python $(PYTHON) --quiet

install-runtime: $(UV)
	$(UV) sync --locked --inexact --extra all --python $(PYTHON) --quiet

install-bench: $(UV)
	$(UV) sync --locked --extra test --extra bench --python $(PYTHON) --quiet

lint: install
	$(VENV)/bin/ruff check src tests benchmarks examples
	$(VENV)/bin/ruff format --check src tests benchmarks examples

typecheck: install
	$(VENV)/bin/mypy

# The web tests drive Debian's chromium with its chromium-driver (nothing is downloaded at test
# time); install them when missing. Needs root (CI runs as root); without them the browser tests
# are skipped, except with CI=true where they fail.
install-browser:
	@command -v chromium >/dev/null && command -v chromedriver >/dev/null || \
	  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver) || \
	  echo "could not install chromium and chromium-driver: the browser tests will not run" >&2

test: lint typecheck install-browser
	$(RUN) -m pytest $(PYTEST_ARGS)

demo: install-runtime
	$(RUN) -m llm_worker.demo

bench: install-bench
	$(RUN) -m benchmarks

clean:
	rm -rf $(VENV) $(TOOLS) .pytest_cache .mypy_cache .ruff_cache .hypothesis
