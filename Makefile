# Two commands do all set-up on a fresh machine: `make demo` and `make test`.
VENV ?= .venv
PY := $(VENV)/bin/python
PYTHON ?= python3
export GLOG_minloglevel := 2
export TF_CPP_MIN_LOG_LEVEL := 2

.PHONY: demo test bench lint clean peer-venv

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check torch==2.13.0
	$(PY) -m pip install -q --disable-pip-version-check -e '.[dev,ray]'
	touch $@

demo: $(VENV)/.installed
	mkdir -p out
	@echo "== 1/2: Big Buck Bunny excerpt filmed by a camera whose clock ran off (speed changes, a freeze,"
	@echo "        skips) with its own sound on the camera's microphone, aligned back to the clean track"
	$(VENV)/bin/avsync align examples/bbb_camera.mp4 --audio examples/bbb_excerpt.mp4 \
		-o out/demo_aligned.mp4 --map out/demo_map.json --plot out/demo_plot.png --overwrite
	$(PY) examples/check_demo.py out/demo_map.json examples/bbb_camera.plan.json
	@echo "== 2/2: synthetic flashes with beeps (random times), picture slowed, frozen, sped up, shifted"
	$(VENV)/bin/avsync align examples/flashes_distorted.mp4 --audio examples/flashes.mp4 \
		-o out/demo_flashes_aligned.mp4 --map out/demo_flashes_map.json --plot out/demo_flashes_plot.png --overwrite
	$(PY) examples/check_demo.py out/demo_flashes_map.json examples/flashes_distorted.plan.json
	@echo "demo: aligned videos -> out/demo_aligned.mp4, out/demo_flashes_aligned.mp4;"
	@echo "      warp maps -> out/demo_map.json, out/demo_flashes_map.json; plots -> out/demo_plot.png, out/demo_flashes_plot.png"

test: $(VENV)/.installed
	$(PY) -m pytest -q

lint: $(VENV)/.installed
	$(VENV)/bin/ruff check avsync tests bench examples
	$(VENV)/bin/mypy

bench: $(VENV)/.installed
	$(PY) bench/run_bench.py

# synctoolbox, the bench's peer aligner, in its own environment (its pins differ from ours).
peer-venv: .venv-peer/.installed
.venv-peer/.installed:
	$(PYTHON) -m venv .venv-peer
	.venv-peer/bin/python -m pip install -q --disable-pip-version-check synctoolbox==1.4.2
	touch $@

clean:
	rm -rf out .pytest_cache
