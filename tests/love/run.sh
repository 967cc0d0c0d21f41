#!/usr/bin/env bash
# tests/love/run.sh <source dir> <scratch dir>: the LÖVE example's test mode (examples/love,
# selftest.lua) under a private X server (xvfb-run -a picks a free display). The status is
# LÖVE's: 0 when a cell moved an entity and every check held, 1 otherwise. Three guards keep it
# from hanging: the example's own watchdog thread (90 s), timeout(1) around LÖVE inside
# xvfb-run (so xvfb-run still stops its server and removes its files), and ctest's TIMEOUT.
set -u
src=$1
scratch=$2
mkdir -p "$scratch/xdg"
# LÖVE's save directory (and any LÖVE configuration) stays out of the user's home.
export XDG_DATA_HOME="$scratch/xdg" XDG_CONFIG_HOME="$scratch/xdg"
export KH_LOVE_SCREENSHOT="$scratch/screenshot.png"
rm -f "$KH_LOVE_SCREENSHOT"
xvfb-run -a -s "-screen 0 800x500x24" \
  timeout -k 5 120 love "$src/examples/love" --test
status=$?
echo "love/example: LÖVE exited with status $status"
exit $status
