# Two commands do everything:  `make demo`  and  `make test`.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
LOCK   := requirements.lock

.PHONY: setup demo test check test-latest lock bench clean tools label-studio

# Debian packages the tests drive, installed once, with apt, when missing: promtool and prometheus
# (`prometheus`) for the alert-rule and scrape tests, and Chromium (`chromium`) for the review desk's
# browser test (Playwright drives it; Playwright's own browser download is never used)
tools:
	@missing=""; \
	  command -v promtool >/dev/null 2>&1 || missing="$$missing prometheus"; \
	  [ -x /usr/bin/chromium ] || missing="$$missing chromium fonts-dejavu-core"; \
	  if [ -n "$$missing" ]; then \
	    SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	    $$SUDO apt-get update -qq && $$SUDO apt-get install -y -qq --no-install-recommends $$missing >/dev/null; \
	  fi

# Label Studio for the bridge's test against a real server, in a virtual environment of its own
# (about 1 GB) with exactly requirements-label-studio.lock, built once and kept in the user's cache,
# outside any clone; a new lock gets a new venv
LABEL_STUDIO_VERSION := 1.23.2
LABEL_STUDIO_LOCK := requirements-label-studio.lock
LABEL_STUDIO_VENV ?= $(or $(XDG_CACHE_HOME),$(HOME)/.cache)/labelwatch/label-studio-$(LABEL_STUDIO_VERSION)-$(shell sha256sum $(LABEL_STUDIO_LOCK) | cut -c1-12)
export LABELWATCH_LABEL_STUDIO_VENV := $(LABEL_STUDIO_VENV)
label-studio:
	@[ -x "$(LABEL_STUDIO_VENV)/bin/label-studio" ] || { \
	  rm -rf "$(LABEL_STUDIO_VENV)" && $(PYTHON) -m venv "$(LABEL_STUDIO_VENV)" && \
	  "$(LABEL_STUDIO_VENV)/bin/pip" install --quiet "$$(grep '^pip==' $(LOCK))" && \
	  "$(LABEL_STUDIO_VENV)/bin/pip" install --quiet --build-constraint $(LABEL_STUDIO_LOCK) \
	    --requirement $(LABEL_STUDIO_LOCK); }

# The venv holds exactly requirements.lock (every transitive dependency of the service and of
# `.[dev]`, pinned; torch is the CPU build on this machine's disk), then labelwatch itself, editable,
# with no dependency resolved anew. The lock constrains the build environments of source packages too.
$(STAMP): pyproject.toml $(LOCK)
	rm -rf $(VENV)
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet "$$(grep '^pip==' $(LOCK))"
	$(BIN)/pip install --quiet --build-constraint $(LOCK) --requirement $(LOCK)
	$(BIN)/pip install --quiet --no-deps --no-build-isolation --editable .
	$(BIN)/pip check
	# the onnx embedding backends' one-off ONNX export of the default model, into the user's cache
	$(BIN)/python -m consumer.embedding export
	touch $(STAMP)

setup: $(STAMP)

demo: $(STAMP)
	$(BIN)/labelwatch demo
	@echo "== To review the flags in your browser: $(BIN)/labelwatch demo --review (prints the desk's URL and token)"

# The whole suite as the machine is, then the replay tests (marker `replay`) again with OpenBLAS on
# its own CPU detection and on another kernel family (AVX instead of AVX2): verdicts must not depend
# on which kernels BLAS picks (docs/reliability.md).
test: $(STAMP) tools label-studio
	$(BIN)/python -m pytest
	@echo "== replay tests, OPENBLAS_CORETYPE and OPENBLAS_L2_SIZE unset (OpenBLAS detects the CPU)"
	env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE $(BIN)/python -m pytest -m replay -p no:cacheprovider
	@echo "== replay tests, OPENBLAS_CORETYPE=Sandybridge (another kernel family)"
	OPENBLAS_CORETYPE=Sandybridge $(BIN)/python -m pytest -m replay -p no:cacheprovider

# The fast tier for development: every test that needs no broker, browser or Label Studio (the
# `kafka` marker; conftest gives it to each test that starts a broker), in under 3 minutes
check: $(STAMP) tools
	$(BIN)/python -m pytest -m "not kafka" -n 2 -p no:cacheprovider

# Drift, before users see it: the newest releases pyproject.toml admits, in a throwaway venv, with
# the whole suite (not part of CI). It prints each package whose newest release the lock lacks.
LATEST := $(or $(TMPDIR),/tmp)/labelwatch-latest
test-latest: tools label-studio
	rm -rf $(LATEST) && $(PYTHON) -m venv $(LATEST)
	$(LATEST)/bin/pip install --quiet --upgrade pip
	$(LATEST)/bin/pip install --quiet -c constraints.txt --editable '.[dev]'
	$(LATEST)/bin/python -m consumer.embedding export
	@echo "== where the newest releases differ from requirements.lock (locked -> newest):"
	$(LATEST)/bin/python tests/test_lock.py
	LABELWATCH_TEST_LATEST=1 $(LATEST)/bin/python -m pytest -p no:cacheprovider

# Regenerate requirements.lock from pyproject.toml (all extras the tests use: `dev`) and
# requirements-build.in, and requirements-label-studio.lock from LABEL_STUDIO_VERSION, with pip-tools
# in a venv of its own; torch stays on constraints.txt's pin. `make lock` moves every package to its
# newest release; `make lock UPGRADE="numpy river"` moves only those.
LOCK_TOOLS := $(or $(XDG_CACHE_HOME),$(HOME)/.cache)/labelwatch/pip-tools-7.7.0
COMPILE = "$(LOCK_TOOLS)/bin/pip-compile" --quiet $(or $(UPGRADE:%=--upgrade-package %),--upgrade) --allow-unsafe \
  --strip-extras --no-emit-find-links --no-emit-index-url --no-emit-trusted-host
lock:
	[ -x "$(LOCK_TOOLS)/bin/pip-compile" ] || { rm -rf "$(LOCK_TOOLS)" && $(PYTHON) -m venv "$(LOCK_TOOLS)" && \
	  "$(LOCK_TOOLS)/bin/pip" install --quiet pip==26.3 pip-tools==7.7.0; }
	$(COMPILE) --extra dev --constraint constraints.txt --output-file $(LOCK) pyproject.toml requirements-build.in
	echo "label-studio==$(LABEL_STUDIO_VERSION)" | $(COMPILE) --output-file $(LABEL_STUDIO_LOCK) -

bench: $(STAMP)
	$(BIN)/python bench/performance.py

clean:
	rm -rf $(VENV) .pytest_cache
