# The front door: CMake, node-gyp and luarocks do the building. CMake builds in cmake-build/
# (node-gyp owns build/ beside binding.gyp).
BUILD ?= cmake-build
JOBS ?= 2

.PHONY: all setup build demo test bench clean

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

clean:
	rm -rf $(BUILD)
