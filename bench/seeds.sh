#!/usr/bin/env bash
# The default `fastbn train` at ten seeds (2147483647, then 1-9): the spread of the final losses
# behind the README's "mean ± sd" row. One `fastbn sweep --seeds 10` on every core (a trial with
# seed S is exactly `fastbn train --seed S`); prints one line per seed, then the mean ± sd.
#     FASTBN_DATA=names.txt bash bench/seeds.sh > bench/results/seeds.txt
# Further arguments go to fastbn sweep: --workers 2, --scheduler tcp://host:8786, ...
set -euo pipefail
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
start=$(date +%s.%N)
fastbn sweep --seeds 10 --out "$out/sweep" --quiet "$@" > /dev/null
end=$(date +%s.%N)
python - "$out/sweep/results.csv" "$start" "$end" <<'EOF'
import csv
import statistics
import sys

rows = list(csv.DictReader(open(sys.argv[1], newline="")))
order = [2147483647] + list(range(1, 10))
rows.sort(key=lambda r: order.index(int(r["seed"])))
for r in rows:
    if r["status"] != "ok":
        print(f"seed {r['seed']:<10} {r['status']}: {r['error']}")
        continue
    us = 1e6 * float(r["wall_time"]) / int(r["steps"])
    print(f"seed {r['seed']:<10} loss: train {float(r['train_loss']):.4f}  "
          f"val {float(r['val_loss']):.4f}  test {float(r['test_loss']):.4f} "
          f"wall time {float(r['wall_time']):.1f} s ({us:.0f} us/step, {r['path']} path)")
ok = [r for r in rows if r["status"] == "ok"]
for k in ("train", "val"):
    v = [float(r[f"{k}_loss"]) for r in ok]
    print(f"{k}: {statistics.mean(v):.4f} ± {statistics.stdev(v):.4f} ({min(v):.4f}-{max(v):.4f})"
          f" over {len(v)} seeds")
workers = len({r["worker"] for r in rows})
print(f"{len(rows)} runs on {workers} workers in {float(sys.argv[3]) - float(sys.argv[2]):.1f} s"
      " (fastbn sweep, cluster start included)")
EOF
