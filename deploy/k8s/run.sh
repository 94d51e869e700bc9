#!/usr/bin/env bash
# Runs a sharded dissection on Kubernetes: creates the shared volume and the
# run's ConfigMap, then applies the jobs of this folder one after another,
# each once the one before has completed (a failed job stops the run).
#
#   IMAGE=registry.example.com/netdissect:0.1.0 bash deploy/k8s/run.sh
#
# IMAGE (default netdissect:0.1.0) is the image built from deploy/Dockerfile;
# the namespace is kubectl's current one (NAMESPACE overrides it).
# DRY_RUN=1 prints every manifest as it would be applied (the image
# substituted) and reaches no cluster: the tests validate that output.
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
image=${IMAGE:-netdissect:0.1.0}
kubectl=(kubectl ${NAMESPACE:+--namespace "$NAMESPACE"})

shards=$(sed -n 's/^  SHARDS: "\([0-9]*\)"$/\1/p' "$here/config.yaml")
field() { sed -n "s/^  $1: \([0-9]*\)\$/\1/p" "$here/$2"; }
if [[ -z $shards ]] || [[ $(field completions 2-thresholds.yaml) != "$shards" ]] ||
    [[ $(field completions 4-counts.yaml) != "$shards" ]] ||
    [[ $(field parallelism 2-thresholds.yaml) != "$shards" ]] ||
    [[ $(field parallelism 4-counts.yaml) != "$shards" ]]; then
    echo "config.yaml has SHARDS=$shards: set completions and parallelism to $shards" \
        "in 2-thresholds.yaml and 4-counts.yaml" >&2
    exit 2
fi

steps=(1-warm-up 2-thresholds 3-merge-thresholds 4-counts 5-merge)
manifest() { sed "s|image: netdissect:0.1.0|image: $image|" "$here/$1.yaml"; }
if [[ ${DRY_RUN:-} == 1 ]]; then
    for step in pvc config "${steps[@]}"; do
        echo "---"
        manifest "$step"
    done
    exit 0
fi

"${kubectl[@]}" apply -f "$here/pvc.yaml" -f "$here/config.yaml"

# Waits for job $1 to complete; fails when it fails.
wait_for() {
    while true; do
        local conditions
        # A failed look (the API server busy) is only a wait.
        conditions=$("${kubectl[@]}" get job "$1" \
            -o jsonpath='{range .status.conditions[*]}{.type}={.status} {end}' || true)
        case " $conditions " in
        *" Complete=True "*) return 0 ;;
        *" Failed=True "*)
            echo "job $1 failed: kubectl logs job/$1 (or -l job-name=$1) says why" >&2
            return 1
            ;;
        esac
        sleep 10
    done
}

for step in "${steps[@]}"; do
    job=$(sed -n 's/^  name: \(netdissect-.*\)$/\1/p' "$here/$step.yaml")
    # A rerun starts each job afresh; finished shards are replaced whole.
    # Foreground: the old pods are gone before new ones (same hostnames) start.
    "${kubectl[@]}" delete job "$job" --ignore-not-found --cascade=foreground --wait=true
    manifest "$step" | "${kubectl[@]}" apply -f -
    echo "waiting for $job"
    wait_for "$job"
done
echo "results: /work/run/results on the netdissect-work volume"
