# Two commands: `make demo` and `make test`. Both build the offline ComfyUI test host first (cached in .host/,
# or in HOST_DIR=..., which scripts/setup_host.sh and tests/host_env.py read too).
ifeq ($(strip $(HOST_DIR)),)
HOST_DIR := .host
endif
export HOST_DIR
PYTHON_HOST := $(HOST_DIR)/venv/bin/python
PYTEST_ARGS ?=

.PHONY: host demo test bench soak clean

host:
	@bash scripts/setup_host.sh

demo: host
	@$(PYTHON_HOST) scripts/demo.py

test: host
	@$(PYTHON_HOST) -m pytest tests -q $(PYTEST_ARGS)

soak: host
	@SOAK_PROMPTS=200 $(PYTHON_HOST) -m pytest tests/test_soak.py -q -s

bench: host
	@$(PYTHON_HOST) scripts/bench.py $(BENCH_ARGS)

clean:
	rm -rf .host .fixtures
