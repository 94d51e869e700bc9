#!/usr/bin/env bash
# This project beside NetDissect-Lite (BENCHMARKS.md, "Against NetDissect-Lite at
# dataset sizes"): per size, a generated Broden-format set (`netdissect synth
# --swatch-percent 10`, all six categories, 224 px), ResNet-18 layer3+layer4 with
# seeded random weights, `--preset lite`; then, one after the other on the same files,
# the peer, our release build and our debug build (the one `cargo xtask dissect` uses).
# Prints one markdown row per run: wall time, stages, peak RSS.
#
# Usage, from the repository root:
#   ../shared/peer/setup.sh MIRROR            # once: the peer under /tmp/peers
#   cargo build --release -p netdissect-cli && cargo build -p netdissect-cli
#   crates/devtools/vs-lite.sh OUT_DIR 500 1500 3000
# Needs GNU time (/usr/bin/time). PEERS overrides /tmp/peers.
set -euo pipefail
[ $# -ge 2 ] || { echo "usage: $0 OUT_DIR SIZE..." >&2; exit 2; }
out=$(realpath -m "$1"); shift
PEERS=${PEERS:-/tmp/peers}
peer=$(realpath "$(dirname "$0")/../../../shared/peer")
mkdir -p "$out"
model=$out/resnet18.pth
[ -f "$model" ] || "$PEERS/venv/bin/python" "$peer/make-resnet18.py" "$model" --classes 8

# Stage seconds from our results.json.
stages() {
  python3 - "$1" <<'EOF'
import json, sys
d = json.load(open(sys.argv[1]))
t = d.get("timings", {})
print("decode %.1f, forward %.1f, thresholds %.1f, counts %.1f, scores %.1f; %d passes (%s)" % (
    t.get("decode_secs", 0), t.get("forward_secs", 0), t.get("thresholds_secs", 0),
    t.get("counts_secs", 0), t.get("score_secs", 0), d["passes"], d["mode"]))
EOF
}

echo "| images | tool | wall s | stages (s) | peak RSS MiB |"
echo "|---|---|---|---|---|"
for n in "$@"; do
  data=$out/b$n
  [ -f "$data/index.csv" ] || target/release/netdissect synth --out "$data" --images "$n" \
    --seed 11 --swatch-percent 10 > /dev/null
  rm -rf "$out/lite-$n"
  log=$(NDL_DATA=$data NDL_MODEL_FILE=$model NDL_NUM_CLASSES=8 "$peer/run-lite.sh" "$out/lite-$n")
  wall=$(grep -o 'Elapsed (wall clock) time.*' <<<"$log" | awk '{print $NF}')
  secs=$(awk -F: '{ if (NF == 3) print $1*3600+$2*60+$3; else print $1*60+$2 }' <<<"$wall")
  kb=$(grep -o 'Maximum resident set size (kbytes): [0-9]*' <<<"$log" | awk '{print $NF}')
  timing=$(grep '^TIMING' <<<"$log" | sed 's/^TIMING //' | paste -sd ';' -)
  echo "| $n | NetDissect-Lite | $secs | $timing | $((kb / 1024)) |"
  for build in release debug; do
    res=$out/ours-$build-$n
    /usr/bin/time -f "%e %M" -o "$out/time" "target/$build/netdissect" dissect \
      --model resnet18 --weights "$model" --layers layer3,layer4 --dataset "$data" \
      --preset lite --backend cpu --out "$res" --force --quiet > "$out/log" 2>&1 \
      || { tail "$out/log"; exit 1; }
    read -r wall kb < "$out/time"
    echo "| $n | ours ($build) | $wall | $(stages "$res/results.json") | $((kb / 1024)) |"
  done
done
