#!/usr/bin/env bash
# One accelerator session, as run on the lent GPU (README, "Benchmarks"): bench/accelerator.py for
# configs/large.py at 8 and 32 clips per device and with remat_frames=time, the `infonce` config,
# a profiler trace of one step of each. Logs, JSON lines and the trace land in $OUT (default
# ./accelerator_out). Wheels in .whl/ (packages the machine lacks, e.g. ml_collections) are
# installed first; nothing is downloaded.
#   bash bench/on_accelerator.sh            # the full set above
#   MODE=mfu bash bench/on_accelerator.sh   # MFU of the pod configs in one lent call, within $BUDGET_S seconds
#                                           # (default 540; each run's time limit is cut to what is left): large_vit
#                                           # at 8 and 32 clips per device (remat_frames=block), the same keeping
#                                           # the dense layers' outputs (model.remat_policy=dots), large_tubelet at
#                                           # 32 (one space-time ViT over 2x16x16 tubelets), a profile of one
#                                           # large_vit step summarised by kernel kind (bench/trace_summary.py ->
#                                           # $OUT/vit_kernels.md), large at 64 clips fused, large at 32 with XLA's
#                                           # cuDNN norm rewrite, large at 32 with XLA's, the fused and the Pallas
#                                           # GroupNorm kernels (--ab --pallas; each GroupNorm layer alone after
#                                           # large_tubelet: --layers --pallas); logs in $OUT/runs.log, JSON lines in
#                                           # $OUT/results.jsonl, and bench/mfu_table.py's $OUT/mfu_table.md (rewritten
#                                           # after each run): each step beside its roofline ceiling;
#                                           # ONLY="NAME ..." runs just those (names as in `== NAME` lines)
set -u
OUT=${OUT:-accelerator_out}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 TF_CPP_MIN_LOG_LEVEL=2
if ls .whl/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    && export PYTHONPATH=/tmp/site
fi
SMOKE="" SCALE=1
[ "${1:-}" = --smoke ] && SMOKE=--smoke SCALE=3  # CPU: 3x the time limits
[ -z "$SMOKE" ] && nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.sm --format=csv,noheader
python3 -c "import jax, flax, optax, orbax.checkpoint as o, ml_collections; print('jax', jax.__version__, 'flax', flax.__version__, 'optax', optax.__version__, jax.devices())" || exit 1
if [ "${MODE:-all}" = mfu ]; then BUDGET_S=${BUDGET_S:-540}; else BUDGET_S=${BUDGET_S:-100000}; fi
run() {  # NAME TIMEOUT ARGS...: the log appended to $OUT/runs.log, the JSON line to $OUT/results.jsonl
  # (unless KEEP_ROW=0; few files: a lent machine returns at most 8); the time limit is cut to what is
  # left of $BUDGET_S
  local name=$1 limit=$(( $2 * SCALE )) log left=$(( BUDGET_S * SCALE - SECONDS )); shift 2
  if [ -n "${ONLY:-}" ] && [[ " $ONLY " != *" $name "* ]]; then return; fi  # ONLY="gn_layers large32ab": those runs
  if [ "$left" -lt 30 ]; then echo "== $name: skipped, ${left}s left of the budget"; return; fi
  [ "$limit" -gt "$left" ] && limit=$left
  log=$(mktemp)
  echo "== $name (limit ${limit}s)"
  timeout "$limit" python3 bench/accelerator.py $SMOKE "$@" > "$log" 2>&1; echo "rc=$?"
  grep -v '^{' "$log" | tail -8
  { echo "== $name: $*"; cat "$log"; } >> "$OUT/runs.log"
  [ "${KEEP_ROW:-1}" = 1 ] && grep '^{"bench": "accelerator"' "$log" | tail -1 >> "$OUT/results.jsonl"
  rm -f "$log"
}
if [ "${MODE:-all}" = mfu ]; then
  # In order of what the targets need, so that a run cut off by the budget loses the least. Measured on an
  # H200 (2026-12-04): large_vit at 32 clips without remat does not fit (137 GiB asked), at 8 it ran at
  # 25.0% MFU, and with remat_frames=block (its config's default) at 94 clips/s (32.0%) from 32 to 128
  # clips; large at 32 at 23.4% (XLA's kernels) and 23.6% (fused); large at 64 compiles for over 2 minutes.
  # remat_policy=dots recomputes LayerNorm, attention and GELU but no dense layer (about a quarter fewer
  # FLOPs a step than recomputing whole blocks).
  table() { [ -s "$OUT/results.jsonl" ] && { python3 bench/mfu_table.py "$OUT/results.jsonl" > "$OUT/mfu_table.md" 2>&1 || echo "table failed"; }; }
  run vit 150 --configs large_vit --per-device-batch large_vit=8+32 --input-steps 0; table
  run vit_dots 150 --configs large_vit --per-device-batch large_vit=8+32 --input-steps 0 --set large_vit:model.remat_policy=dots; table
  # One space-time ViT over 2 x 16 x 16 tubelets (never measured): half large_vit's tokens a clip, 1568 per
  # attention (roofline ceiling 62.1% on an H200 with block remat, 72.1% with dots, against 58.5 / 70.4%).
  run tubelet 120 --configs large_tubelet --per-device-batch large_tubelet=32 --input-steps 0; table
  # Each GroupNorm of large's ResNet-34 at 256 frames of 224 px: flax's, the fused and the Pallas (Triton) kernels,
  # one read of the activations each way against XLA's two (never compiled by Triton before: errors in runs.log).
  KEEP_ROW=0 run gn_layers 100 --layers --pallas --steps 5
  rm -rf /tmp/vit_profile
  KEEP_ROW=0 run vit_profile 100 --configs large_vit --per-device-batch large_vit=32 --input-steps 0 --steps 3 --profile /tmp/vit_profile
  if [ -d /tmp/vit_profile ]; then
    python3 bench/trace_summary.py /tmp/vit_profile --steps 1 > "$OUT/vit_kernels.md" 2>&1; echo "trace summary rc=$?"
    head -28 "$OUT/vit_kernels.md"
  fi
  run large64 200 --configs large --per-device-batch large=64 --input-steps 0 --fused; table
  XLA_FLAGS="${XLA_FLAGS:-} --xla_gpu_enable_cudnn_layer_norm=true" \
    run large32_cudnn_norm 80 --configs large --per-device-batch large=32 --input-steps 0; table
  run large32ab 200 --configs large --per-device-batch large=32 --input-steps 0 --ab --pallas; table
  [ -s "$OUT/mfu_table.md" ] && cat "$OUT/mfu_table.md"
  ls -la "$OUT"
  exit 0
fi
run main 270 --configs large,infonce --per-device-batch large=8,infonce=64 --profile /tmp/profile
tar czf "$OUT/profile.tgz" -C /tmp profile 2>/dev/null
run large32 130 --configs large --per-device-batch large=32 --input-steps 0
run large8_remat_time 130 --configs large --per-device-batch large=8 --input-steps 0 --set large:model.remat_frames=time --set large:model.remat=true
ls -la "$OUT"
