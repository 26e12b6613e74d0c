#!/usr/bin/env bash
# bench/balance-sim.sh: the quality benchmark of vmbalance's planner (issue: simulate).
# Replays the PlanetLab trace of 3 March 2011 (data/planetlab/20110303.tsv, 1,052
# VMs, 288 five-minute samples) on 800 modelled hosts, half HP ProLiant ML110 G4 and
# half G5, under vmbalance (its built-in simulate policy: consolidate, level 5,
# headroom 50 %) and the baselines of Beloglazov and Buyya (CCPE 2012) as CloudSim
# implements them, THR-MMT (static threshold 0.8) and LR-MMT (local regression,
# safety 1.2), all three in the same run, and prints one row per policy: energy,
# SLATAH, PDM, SLAV, migrations, hosts off (mean and at the end), decision time
# per tick (mean and max). The models and the metrics: vmbalance(1), SIMULATE.
# Then the same with --cloudsim (CloudSim's own behaviour: the first decision at
# 300 s, a VM idle for two samples leaves, migrations in count as SLA time), whose
# baselines are to match CloudSim 3.0's runs of the same day; then vmbalance with
# headrooms of 10 % to 60 % in both, the trade-off the default was chosen on.
# Usage: bash bench/balance-sim.sh          (after make vmbalance; about 10 s, one core)
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
echo "# wall time of the run (three policies, trace read once): $(awk -v a="$start" -v b="$end" 'BEGIN { printf "%.2f", b - a }') s"

echo
echo "# the same, --cloudsim"
"$tool" simulate --trace "$trace" --hosts 800 --cloudsim

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
for world in default cloudsim; do
  echo
  echo "# vmbalance with other headrooms (policy consolidate, level 5), $world (tsv: the table's columns)"
  for h in 10 20 25 30 40 45 50 60; do
    printf 'policy consolidate\nlevel 5\nheadroom %s%%\n' "$h" > "$tmp/h$h.conf"
    printf 'headroom %s%%\t' "$h"
    if [ "$world" = cloudsim ]; then flag=--cloudsim; else flag=; fi
    "$tool" simulate --trace "$trace" --hosts 800 --policy vmbalance --config "$tmp/h$h.conf" $flag -o tsv
  done
done
