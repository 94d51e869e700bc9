#!/usr/bin/env bash
# Submits a sharded dissection to Slurm as dependent jobs:
#
#   1. warm-up: tunes the GPU kernels for the run's two batch sizes once
#      into the shared autotune cache (cubecl.toml in $WORK), so that every
#      shard runs the same kernels (two batches of work);
#   2. thresholds, every shard (array, afterok 1);
#   3. merge --phase thresholds (afterok 2);
#   4. counts, every shard (array, afterok 3);
#   5. merge into the results folder (afterok 4);
#   6. failed.sbatch, once a job above failed or 5 succeeded: after a
#      failure it names the failed shard and its log in $WORK/FAILED and
#      cancels the rest of the chain.
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
#   SBATCH_ARGS   sbatch options for every job, after the scripts' own
#                 #SBATCH lines, which they override (split on spaces)
#   MAX_RESTARTS  how often a worker killed by a signal is requeued (default 2)
set -euo pipefail

: "${WORK:?set WORK to a folder every node can read and write}"
: "${DISSECT_ARGS:?set DISSECT_ARGS to the netdissect dissect flags of the run}"
export WORK DISSECT_ARGS
export SHARDS=${SHARDS:-8}
export NETDISSECT=${NETDISSECT:-netdissect}
export DEVICE_ARGS=${DEVICE_ARGS---device 0}
export RESULTS=${RESULTS:-$WORK/results}
export MAX_RESTARTS=${MAX_RESTARTS:-2}
read -ra extra <<<"${SBATCH_ARGS:-}"
if [[ $SHARDS =~ ^0+[1-9][0-9]*$ ]]; then
    # Bash arithmetic ($((SHARDS - 1)) below) reads 010 as octal 8, and
    # refuses 08 outright.
    echo "SHARDS must be a positive number, not '$SHARDS': it has a leading zero," \
        "which bash arithmetic reads as octal; write ${SHARDS#"${SHARDS%%[!0]*}"}" >&2
    exit 2
fi
if ! [[ $SHARDS =~ ^[1-9][0-9]*$ ]]; then
    echo "SHARDS must be a positive number, not '$SHARDS'" >&2
    exit 2
fi

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# Slurm runs a copy of each job script: they find retry.sh here.
export DEPLOY=$here
mkdir -p "$WORK/thresholds" "$WORK/counts" "$WORK/logs"
rm -f "$WORK/FAILED"
# One autotune cache for every worker: CubeCL reads cubecl.toml from the
# working directory, and the job scripts run in $WORK.
if [[ ! -e $WORK/cubecl.toml ]]; then
    printf '[environment]\npath = { directory = "%s" }\n' "$WORK/cubecl-cache" >"$WORK/cubecl.toml"
fi

last=$((SHARDS - 1))
# Appended to, not replaced, on a requeue: the log keeps why a task ran again.
logs=(--parsable --open-mode=append --output="$WORK/logs/%x-%j.out")
tasks=(--parsable --open-mode=append --output="$WORK/logs/%x-%A_%a.out" --array="0-$last")
# `sbatch --parsable` prints `id` or `id;cluster`: the id is what --dependency
# takes. Options on the command line override a script's #SBATCH lines.
sbatch() {
    local out script=${*: -1}
    out=$(command sbatch "${@:1:$#-1}" "${extra[@]}" "$script") && echo "${out%%;*}"
}
tune=$(sbatch "${logs[@]}" "$here/warm-up.sbatch")
thresholds=$(sbatch "${tasks[@]}" --dependency="afterok:$tune" "$here/thresholds.sbatch")
merged=$(sbatch "${logs[@]}" --dependency="afterok:$thresholds" \
    "$here/merge-thresholds.sbatch")
counts=$(sbatch "${tasks[@]}" --dependency="afterok:$merged" "$here/counts.sbatch")
final=$(sbatch "${logs[@]}" --dependency="afterok:$counts" "$here/merge.sbatch")
chain=("$tune" "$thresholds" "$merged" "$counts" "$final")
export CHAIN="${chain[*]}"
# `?`: whichever comes first, a failure anywhere or the final success.
any=""
for id in "${chain[@]}"; do any+="afternotok:$id?"; done
reporter=$(sbatch "${logs[@]}" --dependency="${any}afterok:$final" "$here/failed.sbatch")
echo "submitted $SHARDS shards: warm-up $tune, thresholds $thresholds, merge $merged," \
    "counts $counts, results $final, failure report $reporter"
echo "results: $RESULTS"
