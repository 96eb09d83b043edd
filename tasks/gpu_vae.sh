#!/usr/bin/env bash
# The VAE baselines of the embedded default, retrained by one recipe: the tiny preset's settings (shared with
# tiny-svg) for STEPS steps, tiny-vae (4 channels) and tiny-vae-wide (136 channels) in parallel, each exported
# with its card into svgbench/weights/ and packed into OUT/vae-<name>.tgz. Called by tasks/gpu_run.sh before
# any diffusion model is trained on their latents. It overwrites svgbench/weights/tiny-vae*: rehearse in a copy.
# Usage: bash tasks/gpu_vae.sh OUT_DIR [STEPS]
set -u
OUT=${1:?usage: bash tasks/gpu_vae.sh OUT_DIR [STEPS]}
STEPS=${2:-10000}
py=${PYTHON:-python3}
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1
mkdir -p "$OUT"
for preset in vae-tiny vae-tiny-wide; do
  enc=${preset/vae-tiny/tiny-vae}
  ( $py -m svgbench.cli train vae --preset "$preset" --steps "$STEPS" --eval-every $(( STEPS >= 10 ? STEPS / 10 : 1 )) \
        --out "runs/$enc-steps$STEPS" > "$OUT/train-$enc.log" 2>&1 &&
    rm -rf "svgbench/weights/$enc" &&
    $py -m svgbench.cli train vae --preset "$preset" --steps "$STEPS" --out "runs/$enc-steps$STEPS" \
        --export "svgbench/weights/$enc" >> "$OUT/train-$enc.log" 2>&1
    echo "exit $?" >> "$OUT/train-$enc.log"
    tar czf "$OUT/vae-$enc.tgz" "svgbench/weights/$enc" svgbench/weights/"$enc".md svgbench/weights/"$enc".curve.png \
        "runs/$enc-steps$STEPS/curve.jsonl" ) &
done
wait
tail -n 2 "$OUT"/train-tiny-vae*.log
