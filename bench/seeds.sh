#!/usr/bin/env bash
# The default `fastbn train` at ten seeds: the spread of the final losses behind the README's
# "mean ± sd" row. Prints one line per seed; about 3-8 s per run.
#     FASTBN_DATA=names.txt bash bench/seeds.sh > bench/results/seeds.txt
set -euo pipefail
out=$(mktemp -d)
for s in 2147483647 1 2 3 4 5 6 7 8 9; do
    printf 'seed %-10s ' "$s"
    fastbn train --quiet --no-plot --seed "$s" --out "$out/s$s" | grep -E '^loss|^wall' | paste -sd' '
done
