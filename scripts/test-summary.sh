#!/usr/bin/env bash
# Adds up every cargo "test result:" line of a log into one closing line: "tests: N passed, N failed".
set -euo pipefail
awk '/^test result:/ { for (i = 1; i <= NF; i++) { if ($(i+1) ~ /^passed;?$/) p += $i; if ($(i+1) ~ /^failed;?$/) f += $i } }
     END { printf "tests: %d passed, %d failed\n", p, f }' "$1"
