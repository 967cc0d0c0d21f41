# The front door: CMake, node-gyp and luarocks do the building. CMake builds in cmake-build/
# (node-gyp owns build/ beside binding.gyp).
BUILD ?= cmake-build
JOBS ?= 2

.PHONY: all setup build demo test bench nbcompare fuzz-long clean

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
