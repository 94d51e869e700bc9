#!/usr/bin/env bash
# One binary, two instruction sets: the same release `netdissect` dissects a small set
# natively (AVX-512 where this CPU has it) and under Debian's qemu-user emulating a
# Haswell (AVX2 and FMA, no AVX-512), and the two tallies are compared. gemm picks its
# kernels with run-time CPU detection (CPUID), and qemu's Haswell model reports no
# AVX-512, so the emulated run takes the AVX2 path (an AVX-512 instruction there would
# stop it with SIGILL).
#
# Usage, from the repository root (needs qemu-user: apt-get install qemu-user):
#   cargo build --release -p netdissect-cli && crates/devtools/haswell.sh OUT_DIR [IMAGES]
set -euo pipefail
[ $# -ge 1 ] || { echo "usage: $0 OUT_DIR [IMAGES]" >&2; exit 2; }
out=$(realpath -m "$1"); images=${2:-24}
bin=target/release/netdissect
command -v qemu-x86_64 > /dev/null || { echo "qemu-x86_64 not found (apt-get install qemu-user)" >&2; exit 1; }
mkdir -p "$out"
args=(dissect --model tiny-resnet --weights assets/default/model.safetensors
      --dataset assets/default/probe --layers "$(cat assets/default/layers.txt | tr -d '\n')"
      --max-images "$images" --backend cpu --quiet --force)
grep -o -m1 'avx512f' /proc/cpuinfo > /dev/null && echo "native cpu: avx512f" || echo "native cpu: no avx512f"
/usr/bin/time -f "native: %e s" "$bin" "${args[@]}" --out "$out/native"
/usr/bin/time -f "qemu -cpu Haswell: %e s" qemu-x86_64 -cpu Haswell "$bin" "${args[@]}" --out "$out/haswell"
for tally in "$out"/native/*-tally.csv; do
  name=$(basename "$tally")
  if cmp -s "$tally" "$out/haswell/$name"; then
    echo "$name: identical"
  else
    python3 - "$tally" "$out/haswell/$name" <<'PY'
import csv, sys
a = {r["unit"]: r for r in csv.DictReader(open(sys.argv[1]))}
b = {r["unit"]: r for r in csv.DictReader(open(sys.argv[2]))}
same = sum(a[u]["label"] == b[u]["label"] for u in a)
diou = max(abs(float(a[u]["score"]) - float(b[u]["score"])) for u in a)
print(f"{sys.argv[1].split('/')[-1]}: labels {same}/{len(a)} equal, max |dIoU| {diou:.2e}")
PY
  fi
done
