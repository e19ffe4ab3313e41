PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: install browser test test-fast demo lint clean

install: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --upgrade pip
	$(PY) -m pip install -e '.[dev,tables]'
	touch $(STAMP)

# Headless Chromium, for the test that renders report.html (tests/test_report.py): Debian's
# package, installed once as root (CI); a machine that has it skips this in a moment.
browser:
	@command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium; \
	  else echo "no chromium: the report's browser test is skipped (as root on Debian/Ubuntu, make browser installs it)"; fi; }

test: install browser
	$(PY) -m pytest -q

# The inner loop: everything but the tests marked slow (their own processes: the CLI, torchrun,
# a fresh venv, a network namespace; or several trainings), about a minute. CI runs make test.
test-fast: install
	$(PY) -m pytest -q -m "not slow"

demo: install
	$(PY) -m competition.train --config digits --fold all
	$(PY) -m competition.predict --config digits

lint: install
	$(VENV)/bin/ruff check .

clean:
	rm -rf outputs submissions/*.csv .pytest_cache
