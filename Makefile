# Two commands do all set-up on a fresh machine: `make demo` and `make test`.
VENV ?= .venv
PY := $(VENV)/bin/python
PYTHON ?= python3
export GLOG_minloglevel := 2
export TF_CPP_MIN_LOG_LEVEL := 2

.PHONY: demo test bench lint clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check torch==2.13.0
	$(PY) -m pip install -q --disable-pip-version-check -e '.[dev]'
	touch $@

demo: $(VENV)/.installed
	mkdir -p out
	$(VENV)/bin/avsync align examples/bbb_distorted.mp4 --audio examples/bbb_excerpt.mp4 \
		-o out/demo_aligned.mp4 --map out/demo_map.json --plot out/demo_plot.png --overwrite
	@echo "demo: aligned video -> out/demo_aligned.mp4, warp map -> out/demo_map.json, plot -> out/demo_plot.png"

test: $(VENV)/.installed
	$(PY) -m pytest -q

lint: $(VENV)/.installed
	$(VENV)/bin/ruff check avsync tests bench examples
	$(VENV)/bin/mypy

bench: $(VENV)/.installed
	$(PY) bench/run_bench.py

clean:
	rm -rf out .pytest_cache
