# Two commands do everything:  `make demo`  and  `make test`.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: setup demo test bench clean tools label-studio

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
# (about 1 GB), built once and kept in the user's cache, outside any clone
LABEL_STUDIO_VERSION := 1.23.2
LABEL_STUDIO_VENV ?= $(or $(XDG_CACHE_HOME),$(HOME)/.cache)/labelwatch/label-studio-$(LABEL_STUDIO_VERSION)
export LABELWATCH_LABEL_STUDIO_VENV := $(LABEL_STUDIO_VENV)
label-studio:
	@[ -x "$(LABEL_STUDIO_VENV)/bin/label-studio" ] || { \
	  rm -rf "$(LABEL_STUDIO_VENV)" && $(PYTHON) -m venv "$(LABEL_STUDIO_VENV)" && \
	  "$(LABEL_STUDIO_VENV)/bin/pip" install --quiet "label-studio==$(LABEL_STUDIO_VERSION)"; }

$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	PIP_CONSTRAINT=constraints.txt $(BIN)/pip install --quiet -c constraints.txt torch==2.13.0
	PIP_CONSTRAINT=constraints.txt $(BIN)/pip install --quiet -c constraints.txt -e '.[dev]'
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

bench: $(STAMP)
	$(BIN)/python bench/performance.py

clean:
	rm -rf $(VENV) .pytest_cache
