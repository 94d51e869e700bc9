#!/usr/bin/env bash
# Submits a sharded dissection to Slurm as dependent jobs:
#
#   1. warm-up: tunes the GPU kernels for the run's two batch sizes once
#      into the shared autotune cache (cubecl.toml in $WORK), so that every
#      shard runs the same kernels (two batches of work);
#   2. thresholds, every shard (array, afterok 1);
#   3. merge --phase thresholds (afterok 2);
#   4. counts, every shard (array, afterok 3);
#   5. merge into the results folder (afterok 4).
#
# Configuration, from the environment (see README.md):
#   WORK          shared folder for the shards (required)
#   DISSECT_ARGS  the `netdissect dissect` flags of the run, without --out,
#                 --shard or --device (required; split on spaces)
#   SHARDS        number of shards (default 8)
#   NETDISSECT    the binary (default: netdissect on PATH)
#   DEVICE_ARGS   how a worker picks its GPU (default: --device 0, the one
#                 GPU Slurm gives the job)
#   RESULTS       the results folder (default: $WORK/results)
set -euo pipefail

: "${WORK:?set WORK to a folder every node can read and write}"
: "${DISSECT_ARGS:?set DISSECT_ARGS to the netdissect dissect flags of the run}"
export WORK DISSECT_ARGS
export SHARDS=${SHARDS:-8}
export NETDISSECT=${NETDISSECT:-netdissect}
export DEVICE_ARGS=${DEVICE_ARGS---device 0}
export RESULTS=${RESULTS:-$WORK/results}
if ! [[ $SHARDS =~ ^[1-9][0-9]*$ ]]; then
    echo "SHARDS must be a positive number, not '$SHARDS'" >&2
    exit 2
fi

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
mkdir -p "$WORK/thresholds" "$WORK/counts" "$WORK/logs"
# One autotune cache for every worker: CubeCL reads cubecl.toml from the
# working directory, and the job scripts run in $WORK.
if [[ ! -e $WORK/cubecl.toml ]]; then
    printf '[environment]\npath = { directory = "%s" }\n' "$WORK/cubecl-cache" >"$WORK/cubecl.toml"
fi

last=$((SHARDS - 1))
logs="--output=$WORK/logs/%x-%A_%a.out"
# `sbatch --parsable` prints `id` or `id;cluster`: the id is what --dependency takes.
sbatch() { local out; out=$(command sbatch "$@") && echo "${out%%;*}"; }
tune=$(sbatch --parsable "$logs" "$here/warm-up.sbatch")
thresholds=$(sbatch --parsable "$logs" --array="0-$last" --dependency="afterok:$tune" \
    "$here/thresholds.sbatch")
merged=$(sbatch --parsable "$logs" --dependency="afterok:$thresholds" \
    "$here/merge-thresholds.sbatch")
counts=$(sbatch --parsable "$logs" --array="0-$last" --dependency="afterok:$merged" \
    "$here/counts.sbatch")
final=$(sbatch --parsable "$logs" --dependency="afterok:$counts" "$here/merge.sbatch")
echo "submitted $SHARDS shards: warm-up $tune, thresholds $thresholds, merge $merged," \
    "counts $counts, results $final"
echo "results: $RESULTS"
