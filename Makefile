# The front door: CMake, node-gyp and luarocks do the building. CMake builds in cmake-build/
# (node-gyp owns build/ beside binding.gyp).
BUILD ?= cmake-build
JOBS ?= 2

.PHONY: all setup build demo test bench nbcompare notebook notebook-screenshot fuzz-long clean

all: build

setup:
	@bash .ci/deps

build:
	@cmake -S . -B $(BUILD) -DCMAKE_BUILD_TYPE=RelWithDebInfo -DKH_ASAN_TESTS=ON >/dev/null
	@cmake --build $(BUILD) -j$(JOBS)

demo: setup build
	@$(BUILD)/kh_demo $(BUILD)/demo-figure.png

test: setup build
	@cd $(BUILD) && ctest --output-on-failure -j$(JOBS)

bench: setup build
	@KH_BUILD=$(BUILD) bash bench/run.sh

# Not part of `make test`: real notebooks (tests/notebooks) cell by cell in ipykernel and in
# kernelhost (both modes), a Markdown table of matched cells on stdout (NBCOMPARE_ARGS to pass
# options, e.g. `--modes worker` or a notebook path). It rebuilds the Node addon it drives
# (npm install), so the figures are those of the code in the tree.
NBCOMPARE_ARGS ?=
nbcompare: setup
	@npm install --prefer-offline --no-audit --no-fund --loglevel=error >/dev/null
	@/usr/bin/python3 tests/notebooks/compare.py $(NBCOMPARE_ARGS)

# The notebook page (examples/notebook): builds the Node addon (npm install, offline, against the
# installed Node headers) and serves the .ipynb files of NOTEBOOK_DIR on 127.0.0.1; the URL it
# prints carries the token. NOTEBOOK_ARGS for more (--port 8888, --cull SECONDS).
NOTEBOOK_DIR ?= notebooks
NOTEBOOK_ARGS ?=
NODE_PREFIX := $(shell p=$$(command -v node) && dirname "$$(dirname "$$(readlink -f "$$p")")")
NPM_INSTALL = npm_config_nodedir=$(NODE_PREFIX) npm install --prefer-offline --no-audit --no-fund \
  --loglevel=error >/dev/null
notebook: setup
	@$(NPM_INSTALL)
	@node examples/notebook/server.js $(NOTEBOOK_DIR) $(NOTEBOOK_ARGS)

# The README's screenshot (docs/notebook.png), taken by the browser test (ctest notebook/browser).
notebook-screenshot: setup
	@$(NPM_INSTALL)
	@KH_NOTEBOOK_SCREENSHOT=docs/notebook.png node tests/notebook/browser.js

# Not part of `make test`: the frame decoder's fuzzer for 10 million executions in FUZZ_JOBS
# niced processes (FUZZ_RUNS, FUZZ_JOBS to change), its figure printed at the end; builds only
# the fuzzer. CI keeps its short session.
FUZZ_RUNS ?= 10000000
FUZZ_JOBS ?= 2
fuzz-long:
	@cmake -S . -B $(BUILD) -DCMAKE_BUILD_TYPE=RelWithDebInfo -DKH_FUZZ_RUNS=$(FUZZ_RUNS) \
	  -DKH_FUZZ_JOBS=$(FUZZ_JOBS) >/dev/null
	@nice cmake --build $(BUILD) --target fuzz-long

clean:
	rm -rf $(BUILD)
