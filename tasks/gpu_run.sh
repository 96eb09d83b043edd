#!/usr/bin/env bash
# The prepared GPU run. Without arguments: the benchmark alone, under 8 minutes on one H100/H200:
#   0. SVG-XL forward throughput and MFU (bf16 autocast, TF32, fp32; batch 64 and 256; eager and torch.compile'd),
#      guided sampling through the task path (svg-paper-cfg, precision auto) and the FID-50K sampling time they
#      imply: results/gpu-<device>/gpu_bench.{json,md} (tasks/gpu_bench.py; commit that folder).
# With OUT_DIR, the generation tasks of the embedded models as well (tens of minutes):
#   0b. with VAE_STEPS > 0, the VAE baselines retrained for VAE_STEPS
#      steps (default 0: the shipped ones, which already reconstruct at least as well as tiny-svg, are kept);
#   1. the shipped diffusion models retrained with `svgbench train diffusion --export`, one per encoder with a
#      decoder, in parallel; the number of steps fills TRAIN_SECONDS at the speed a short probe run measures;
#   2. `svgbench run --tasks generation,sampling` on the GPU with Heun to 50 steps: FID and time per image
#      at 1..50 sampler steps, with the device named in every record;
#   3. the timing benchmarks (pytest-benchmark): sampling + decoding per encoder, sampler and step count, and one
#      sampler step against one model forward (tiny model, and SVG-XL's latent shape), as gpu-results/sampling_speed.md.
# Usage: bash tasks/gpu_run.sh [OUT_DIR [TRAIN_SECONDS]]   (OUT_DIR receives logs, JSON, tables and tarballs)
# Knobs for a quick rehearsal on CPU: PROBE_STEPS, MAX_STEPS, MIN_STEPS, TRAIN_ARGS (extra `svgbench train
# diffusion` flags), RUN_ARGS (extra `svgbench run` flags). It overwrites svgbench/weights/diffusion/: rehearse in a copy.
set -u
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1
# 0. the benchmark (its own time budget keeps it under 8 minutes; compiled rows past it are listed as skipped)
${PYTHON:-python3} tasks/gpu_bench.py --out "${RESULTS:-results}" || echo "gpu_bench failed"
[ $# -ge 1 ] || exit 0
OUT=$1
TRAIN_SECONDS=${2:-200}
PROBE_STEPS=${PROBE_STEPS:-200}
MIN_STEPS=${MIN_STEPS:-2000}
MAX_STEPS=${MAX_STEPS:-40000}
ENCODERS=${ENCODERS:-"tiny-svg tiny-vae tiny-vae-wide tiny-svg-dino-only"}
RUN_ARGS=${RUN_ARGS:-}
TRAIN_ARGS=${TRAIN_ARGS:-}
LOG="$OUT/logs"  # packed into OUT/logs.tgz at the end: OUT holds a few files
mkdir -p "$LOG"
py=${PYTHON:-python3}
svgbench() { $py -m svgbench.cli "$@"; }
stamp() { echo "[$(date +%T)] $*" | tee -a "$LOG/timeline.txt"; }

stamp "environment"
{ nvidia-smi -L 2>/dev/null || echo "no nvidia-smi"
  $py -c "import torch, timm, diffusers, torch_fidelity; print('torch', torch.__version__, 'cuda', torch.cuda.is_available(), 'timm', timm.__version__, 'diffusers', diffusers.__version__)"
} > "$LOG/device.txt" 2>&1
cat "$LOG/device.txt"

if [ "${VAE_STEPS:-0}" -gt 0 ]; then
  stamp "0b. VAE baselines: ${VAE_STEPS:-0} steps each (vae-tiny, vae-tiny-wide), in parallel"
  PYTHON=$py bash tasks/gpu_vae.sh "$OUT" "${VAE_STEPS:-0}" > "$LOG/vae.log" 2>&1
  tail -n 5 "$LOG/vae.log"
fi

stamp "1a. training-speed probe ($PROBE_STEPS steps per encoder, in parallel)"
for e in $ENCODERS; do
  svgbench train diffusion --encoder "$e" --train-steps "$PROBE_STEPS" --eval-every 0 --runs-dir /tmp/svgbench-probe $TRAIN_ARGS \
      > "$LOG/probe-$e.log" 2>&1 &
done
wait
STEPS=$($py - "$PROBE_STEPS" "$TRAIN_SECONDS" "$MIN_STEPS" "$MAX_STEPS" <<'EOF'
import glob, json, sys
probe, budget, lo, hi = (float(a) for a in sys.argv[1:])
walls = [json.loads(open(f).read().splitlines()[-1])["wall_s"] for f in glob.glob("/tmp/svgbench-probe/*/curve.jsonl")]
rate = probe / max(walls) if walls else 0.0  # the slowest of the parallel runs
print(int(min(hi, max(lo, rate * budget // 1000 * 1000))) if rate else 0)
EOF
)
stamp "probe: $STEPS steps fit ${TRAIN_SECONDS}s"

if [ "$STEPS" -gt 0 ]; then
  stamp "1b. training $STEPS steps per encoder, judge-FID every $((STEPS / 10)) steps"
  for e in $ENCODERS; do
    ( svgbench train diffusion --encoder "$e" --train-steps "$STEPS" --eval-every $((STEPS / 10)) --export $TRAIN_ARGS \
          > "$LOG/train-$e.log" 2>&1
      echo "exit $?" >> "$LOG/train-$e.log"
      tar czf "$OUT/diffusion-$e.tgz" svgbench/weights/diffusion/"$e".* runs/diffusion/"$e"-????????-*/curve.jsonl \
          runs/diffusion/"$e"-????????-*/config.json ) &
  done
  wait
  tail -n 3 "$LOG"/train-*.log
fi

stamp "2. generation and few-step sampling tables"
# shellcheck disable=SC2086
svgbench run --device "${DEVICE:-auto}" --tasks generation,sampling --results gpu-results \
    --set sampling.heun_max_steps=50 $RUN_ARGS > "$LOG/run.log" 2>&1
echo "exit $?" >> "$LOG/run.log"
tail -n 40 "$LOG/run.log"

stamp "3. sampling-speed and step-vs-forward benchmarks"
$py -m pytest tasks/test_generation.py --benchmark -k "sampling_speed or step_vs_forward" -p no:cacheprovider -q \
    --results gpu-results --benchmark-json gpu-results/sampling_speed_benchmark.json > "$LOG/speed.log" 2>&1
echo "exit $?" >> "$LOG/speed.log"
cat gpu-results/sampling_speed.md
tar czf "$OUT/gpu-results.tgz" gpu-results
stamp "done"
tar czf "$OUT/logs.tgz" -C "$OUT" logs && rm -r "$LOG"
