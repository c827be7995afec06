# The two Quick start commands: `make demo` and `make test` (the fast tier; `make test-all`
# runs every test, as CI does).
# Both create (or reuse) the virtualenv at .venv and install the package into it.
PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
BEAM_STAMP := $(VENV)/.installed-beam
AOT_STAMP := $(VENV)/.installed-aot

.PHONY: demo test test-all venv aot clean

$(STAMP): setup.py
	@test -x $(PY) || $(PYTHON) -m venv $(VENV) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev]'
	# Lip landmarks: MediaPipe's wheel carries its face models; --no-deps because its metadata
	# pins numpy<2 / protobuf<5 (it runs with ours; README "Installation notes").
	$(PY) -m pip install -q --no-deps mediapipe==0.10.21
	@touch $(STAMP)

# The Beam extra (data preparation on Apache Beam) is optional: the demo runs without it,
# the test suite installs it to test the Beam path.
$(BEAM_STAMP): $(STAMP)
	$(PY) -m pip install -q -e '.[beam]'
	@touch $(BEAM_STAMP)

# The target compilers for `python -m modeformer_jax.plan --target v5e-256|h100-8|...`
# (deviceless AOT): libtpu through the `aot` extra; the GPU compiler (jax-cuda12 PJRT plugin
# and ptxas, pinned in modeformer_jax/training/aot.py) into $(VENV)/aot-cuda, which only the planner
# puts on its path. About 1.1 GB in all.
$(AOT_STAMP): $(STAMP) setup.py modeformer_jax/training/aot.py
	$(PY) -m pip install -q -e '.[dev,aot]'
	$(PY) -m pip install -q --no-deps --upgrade --target $(VENV)/aot-cuda \
	  $$($(PY) -c "from modeformer_jax.training import aot; print(' '.join(aot.GPU_COMPILER_PINS))")
	@touch $(AOT_STAMP)

venv: $(STAMP)

aot: $(AOT_STAMP)

demo: $(STAMP)
	$(PY) -m modeformer_jax.demo --out demo_out

# The fast tier: everything but the tests marked slow (training runs, real data, subprocess
# CLIs) or browser (Chromium screenshots).
test: $(STAMP) $(BEAM_STAMP)
	$(PY) -m pytest -q -m "not slow and not browser" tests

test-all: $(STAMP) $(BEAM_STAMP) $(AOT_STAMP)
	$(PY) -m pytest -q tests

clean:
	rm -rf demo_out .pytest_cache
