#!/usr/bin/env bash
# run.sh: `make bench`: builds kh_bench if the CMake build has not, then runs bench/run.py,
# which measures kernelhost and ipykernel side by side and writes bench/results/latest.json.
# KH_BUILD names the build directory (default: build). BENCH_QUICK=1 is a quick smoke run.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BUILD=$(cd "$ROOT" && mkdir -p "${KH_BUILD:-build}" && cd "${KH_BUILD:-build}" && pwd)
export KH_BUILD=$BUILD

if [ ! -x /usr/bin/python3 ] || ! /usr/bin/python3 -c 'import jupyter_client, ipykernel' 2>/dev/null
then
  echo "bench: Debian's python3-ipykernel and python3-jupyter-client are needed:" >&2
  echo "  apt-get install -y python3-ipykernel python3-jupyter-client   (or: make setup)" >&2
  exit 1
fi

# kh_bench comes from bench/CMakeLists.txt once the top level has add_subdirectory(bench);
# until then (or in a build without it) compile it here against the build's libkernelhost.
if [ -x "$BUILD/bench/kh_bench" ] && [ "$BUILD/bench/kh_bench" -nt "$ROOT/bench/kh_bench.c" ]
then
  KH_BENCH=$BUILD/bench/kh_bench
else
  if [ ! -e "$BUILD/libkernelhost.so" ]; then
    cmake -S "$ROOT" -B "$BUILD" -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
    cmake --build "$BUILD" --target kernelhost -j2
  fi
  mkdir -p "$BUILD/bench-standalone"
  KH_BENCH=$BUILD/bench-standalone/kh_bench
  if [ ! -x "$KH_BENCH" ] || [ "$ROOT/bench/kh_bench.c" -nt "$KH_BENCH" ] ||
     [ "$BUILD/libkernelhost.so" -nt "$KH_BENCH" ]; then
    # shellcheck disable=SC2046
    ${CC:-cc} -O2 -g -Wall -Wextra -Wno-unused-parameter -o "$KH_BENCH" "$ROOT/bench/kh_bench.c" \
      -I"$ROOT/core/include" $(pkg-config --cflags libuv) -L"$BUILD" -lkernelhost \
      $(pkg-config --libs libuv) -Wl,-rpath,"$BUILD"
  fi
fi
export KH_BENCH
exec /usr/bin/python3 "$ROOT/bench/run.py" "$@"
