#!/usr/bin/env bash
# Runs a sharded dissection on Kubernetes: creates the shared volume and the
# run's ConfigMap, then applies the jobs of this folder one after another,
# each once the one before has completed (a failed job stops the run).
#
#   IMAGE=registry.example.com/netdissect:0.1.0 bash deploy/k8s/run.sh
#
# IMAGE (default netdissect:0.1.0) is the image built from deploy/Dockerfile,
# as a Docker/OCI reference: [host[:port]/]path[:tag][@sha256:<digest>];
# anything else is refused before anything is applied.
# The namespace is kubectl's current one (NAMESPACE overrides it).
# DRY_RUN=1 prints every manifest as it would be applied (the image
# substituted) and reaches no cluster: the tests validate that output.
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
image=${IMAGE:-netdissect:0.1.0}
kubectl=(kubectl ${NAMESPACE:+--namespace "$NAMESPACE"})

# The reference grammar of Docker's distribution/reference, less IPv6 hosts;
# digests as the OCI image spec has them for sha256 (64 lowercase hex).
# Letters are spelt out: a range such as [a-z] may take in capitals in some
# locales.
lower=abcdefghijklmnopqrstuvwxyz
upper=ABCDEFGHIJKLMNOPQRSTUVWXYZ
digit=0123456789
alnum="[$lower$digit]+"
component="$alnum(([._]|__|-+)$alnum)*"
host_part="[$lower$upper$digit]([$lower$upper$digit-]*[$lower$upper$digit])?"
host="$host_part([.]$host_part)*(:[$digit]+)?"
tag="[$lower$upper${digit}_][$lower$upper${digit}_.-]{0,127}"
digest="sha256:[${digit}abcdef]{64}"
reference="^($host/)?$component(/$component)*(:$tag)?(@$digest)?\$"
if ! [[ $image =~ $reference ]]; then
    echo "IMAGE='$image' is not a valid image reference: expected" \
        "[host[:port]/]path[:tag][@sha256:<64 lowercase hex digits>], the path made of" \
        "lowercase letters and digits joined by '/', '.', '_', '__' or '-', the tag of" \
        "letters, digits, '_', '.' and '-' (at most 128, not starting with '.' or '-')," \
        "e.g. registry.example.com:5000/team/netdissect:0.1.0" >&2
    exit 2
fi

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
# Manifest $1 with its image replaced by $image: plain string surgery, so
# that no character of the reference means anything (as `&` or the delimiter
# would in a sed replacement).
manifest() {
    local line old='image: netdissect:0.1.0'
    while IFS= read -r line || [[ -n $line ]]; do
        if [[ $line == *"$old"* ]]; then
            line="${line%%"$old"*}image: $image${line#*"$old"}"
        fi
        printf '%s\n' "$line"
    done <"$here/$1.yaml"
}
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
