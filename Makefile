# The two commands of the README: `make demo` and `make test`.
PY      ?= python3
VENV    := .venv
VPY     := $(VENV)/bin/python
BUNDLE  ?= bundles/demo
PORT    ?= 5006
DEMO_ARGS ?=
# UTF-8 whatever the locale: astropy switches the process locale to "C" while it parses times, from any thread, and
# an open() without an encoding in another thread then reads and writes ASCII (seen as a flaky test on clean clones).
export PYTHONUTF8 = 1

.PHONY: venv demo bundle serve test fuzz browser-deps clean

$(VENV)/.installed: pyproject.toml
	test -x $(VPY) || $(PY) -m venv $(VENV)
	$(VPY) -m pip install -q --upgrade pip
	# torch/torchvision first, at versions that come from this machine's disk (see README).
	$(VPY) -m pip install -q torch==2.14.1 torchvision==0.29.1
	$(VPY) -m pip install -q -e '.[test,scale]'
	touch $@

venv: $(VENV)/.installed

$(BUNDLE)/manifest.json: | venv
	$(VPY) -m precompute demo --out $(BUNDLE) $(DEMO_ARGS)

bundle: $(BUNDLE)/manifest.json

# localhost only: the explorer has no login (README "Security" says how to expose it on purpose)
serve: bundle
	$(VENV)/bin/panel serve explorer --port $(PORT) --address 127.0.0.1 --allow-websocket-origin=localhost:$(PORT) --allow-websocket-origin=127.0.0.1:$(PORT) --auth-module $(CURDIR)/explorer/visitors.py --args --bundle $(BUNDLE)

demo: serve

# Headless Chromium + its driver for the browser tests (Debian packages; no browser download).
browser-deps:
	@command -v chromium >/dev/null && command -v chromedriver >/dev/null || \
	  { SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); $$SUDO apt-get update -qq && \
	    DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq chromium chromium-driver >/dev/null; }

test: venv browser-deps
	$(VPY) -m pytest

# Ten times the random examples of the derandomised CI run, new ones each time; run it before you stop, and keep
# every failure it finds as an @example beside its test.
fuzz: venv
	HYPOTHESIS_PROFILE=fuzz $(VPY) -m pytest tests/core/test_fuzz.py

clean:
	rm -rf $(VENV) bundles .pytest_cache
