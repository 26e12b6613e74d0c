#!/usr/bin/env bash
# bench/balance-sim.sh: the quality benchmark of vmbalance's planner (issue: simulate).
# Replays the PlanetLab trace of 3 March 2011 (data/planetlab/20110303.tsv, 1,052
# VMs, 288 five-minute samples) on 800 modelled hosts, half HP ProLiant ML110 G4 and
# half G5, under vmbalance (its built-in simulate policy: consolidate, level 5,
# headroom 25 %) and the baselines of Beloglazov and Buyya (CCPE 2012) as CloudSim
# implements them, THR-MMT (static threshold 0.8) and LR-MMT (local regression,
# safety 1.2), all three in the same run, and prints one row per policy: energy,
# SLATAH, PDM, SLAV, migrations, hosts off (mean and at the end), decision time
# per tick (mean and max). The models and the metrics: man/vmbalance-simulate.txt.
# Then the same with headroom 10 % to 40 %, the trade-off the default was chosen on.
# Usage: bash bench/balance-sim.sh          (after make vmbalance; about 5 s, one core)
set -euo pipefail

self=$(readlink -f "$0")
root=$(cd "$(dirname "$self")/.." && pwd)
tool=$root/vmbalance/vmbalance
trace=$root/data/planetlab/20110303.tsv
[ -x "$tool" ] || { echo "balance-sim.sh: $tool is not built: make vmbalance" >&2; exit 1; }

echo "# vmbalance simulate --trace data/planetlab/20110303.tsv --hosts 800 ($(date -u), $(nproc) cores)"
start=$(date +%s.%N)
"$tool" simulate --trace "$trace" --hosts 800
end=$(date +%s.%N)
echo "# wall time of the run (three policies, trace read once): $(echo "$end - $start" | bc) s"

echo
echo "# vmbalance with other headrooms (policy consolidate, level 5)"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
for h in 10 15 20 25 30 35 40; do
  printf 'policy consolidate\nlevel 5\nheadroom %s%%\n' "$h" > "$tmp/h$h.conf"
  printf 'headroom %s%%\t' "$h"
  "$tool" simulate --trace "$trace" --hosts 800 --policy vmbalance --config "$tmp/h$h.conf" -o tsv
done
