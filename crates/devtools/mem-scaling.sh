#!/bin/bash
# Peak RSS and dissection time against dataset size (100/400/1600 images) on
# the CPU backend, with the activation cache on and off (BENCHMARKS.md,
# "Memory flat in images"). Run from the repository root after
# `cargo build -p netdissect-cli`; needs GNU time (/usr/bin/time).
set -euo pipefail
B=target/debug/netdissect
D=${MEM_DATA:-target/mem-scaling}
mkdir -p "$D"
[ -f "$D/p224/index.csv" ] || $B synth --out "$D/p224" --images 1600 --seed 11 --size 224
[ -f "$D/p112/index.csv" ] || $B synth --out "$D/p112" --images 1600 --seed 11 --size 112 --swatch-percent 10
for model in planted tiny; do
  if [ $model = planted ]; then
    args=(--model planted-colors --layers color4,color16 --dataset "$D/p224")
  else
    args=(--model tiny-resnet --weights assets/default/model.safetensors
          --layers layer1,layer2,layer3,layer4 --dataset "$D/p112")
  fi
  for n in 100 400 1600; do
    for cache in 2048 0; do
      /usr/bin/time -f "%e %M" -o "$D/time" $B dissect "${args[@]}" --max-images $n \
        --backend cpu --cache-mib $cache --out "$D/out" --force --quiet > "$D/log" 2>&1
      read -r wall kb < "$D/time"
      secs=$(grep -o '[0-9.]* s on cpu' "$D/log" | head -1)
      echo "$model images=$n cache_mib=$cache wall=${wall}s dissection=${secs% on cpu} peak_rss=$((kb / 1024))MiB"
    done
  done
done
