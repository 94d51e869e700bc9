#!/usr/bin/env bash
# Sourced by the job scripts: `retry CMD...` runs CMD and, when it died of
# a signal, requeues the job.
# A worker that dies of a signal (killed for memory, a driver crash,
# kill -9) is retried as the same task: the job requeues itself, up to
# MAX_RESTARTS times (default 2). Its output folder is swapped in whole, so
# a retry never sees half of it; any other exit is the job's result.
retry() {
    local rc=0
    "$@" || rc=$?
    if ((rc > 128 && ${SLURM_RESTART_COUNT:-0} < ${MAX_RESTARTS:-2})); then
        echo "netdissect died of signal $((rc - 128)): requeueing job $SLURM_JOB_ID" \
            "(restart $((${SLURM_RESTART_COUNT:-0} + 1)) of ${MAX_RESTARTS:-2})" >&2
        scontrol requeue "$SLURM_JOB_ID"
    fi
    return "$rc"
}
