"""Accelerator benchmark: the training step of configs/large.py (bf16) and of the `infonce` config (the
one-tower default until 2026-12-05) on this machine's devices. Per config: compile time, step time,
clips/s, model FLOPs per step (XLA's cost analysis of the step without rematerialisation and with
loops unrolled, so recomputation is not counted and loop bodies count once per iteration), MFU
against the device's peak, device memory (XLA's analysis of the compiled step; the allocator's
process-wide peak is in the JSON), and the input-bound ratio (step time fed by the tf.data pipeline
/ fed from device memory).
Prints a table, then one JSON line.

  python bench/accelerator.py                      # on a GPU/TPU host: large at 8 clips/device, infonce at 64
  python bench/accelerator.py --smoke              # CPU, small shapes, a few minutes (checks the script runs)
  python bench/accelerator.py --configs large --per-device-batch large=16 --profile /tmp/trace

MFU = model FLOPs / step time / (peak x devices). Peaks (dense bf16, per chip, vendor figures) are in
PEAK_TFLOPS; on CPU the peak is a float32 matmul measured in the same run. The input-bound ratio
needs TensorFlow and the config's dataset (else the built-in moving_shapes at the config's shapes);
where TensorFlow is not installed it is reported as null.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import statistics
import sys
import time
from contextlib import nullcontext

import numpy as np

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

# Dense bf16 peak per chip in TFLOP/s (vendor datasheets), matched against device_kind in order.
PEAK_TFLOPS = (("H100", 989.0), ("H200", 989.0), ("A100", 312.0), ("L4", 121.0), ("v4", 275.0),
               ("v5 lite", 197.0), ("v5e", 197.0), ("v5p", 459.0), ("v5", 459.0), ("v6 lite", 918.0),
               ("v6e", 918.0))
SMOKE = {"large": ["data.num_frames=4", "data.frame_size=64"], "infonce": [],
         "large_vit": ["data.num_frames=4", "data.frame_size=64", "model.vit_depth=2"],
         "large_tubelet": ["data.num_frames=4", "data.frame_size=64", "model.vit_depth=2"]}


def parse():
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--configs", default="large,infonce")
  p.add_argument("--per-device-batch", default="large=8,infonce=64",
                 help="NAME=N,... clips per device; NAME=8+32+64 runs NAME at each (rows NAME@8, ...)")
  p.add_argument("--steps", type=int, default=10, help="timed steps (median reported)")
  p.add_argument("--input-steps", type=int, default=10, help="steps fed by the pipeline (0 = skip)")
  p.add_argument("--profile", default="", help="write a profiler trace of one step of each config here")
  p.add_argument("--smoke", action="store_true", help="small shapes and few steps (CPU)")
  p.add_argument("--set", action="append", default=[], help="NAME:section.field=value overrides")
  p.add_argument("--ab", action="store_true",
                 help="run each config twice, side by side: GroupNorm and the stem max-pool as autodiff of flax's/"
                      "XLA's ops (rows NAME[xla]) and as sora_jax's fused kernels (NAME[fused]); see models/kernels.py")
  p.add_argument("--fused", action="store_true", help="only the fused kernels' variant of --ab (rows NAME[fused])")
  p.add_argument("--pallas", nargs="?", const="pallas", choices=("pallas", "pallas_wide"),
                 help="with --ab/--fused: a variant with the Pallas GroupNorm kernels (NAME[pallas]: one group a "
                      "program; --pallas pallas_wide: 32-byte rows); with --layers: "
                      "columns of them, one group and 32-byte rows a program (models/group_norm_pallas.py; Pallas's "
                      "interpreter on CPU, slow)")
  p.add_argument("--layers", action="store_true",
                 help="instead: each GroupNorm+ReLU and the stem max-pool of configs/large.py's ResNet-34 and "
                      "EfficientNet-Lite0's depthwise convolutions, forward + gradient, XLA's vs ours, at "
                      "--layer-frames frames of --layer-size px in --layer-dtype")
  p.add_argument("--layer-frames", type=int, default=256, help="frames per device (8 clips x 2 views x 16 frames)")
  p.add_argument("--layer-size", type=int, default=224)
  p.add_argument("--layer-dtype", default="bfloat16")
  return p.parse_args()


def peak_flops(device, reps: int = 5) -> tuple[float, str]:
  """Per-device peak FLOP/s and where it came from."""
  import jax
  import jax.numpy as jnp
  kind = device.device_kind
  if device.platform != "cpu":
    for key, tflops in PEAK_TFLOPS:
      if key.lower() in kind.lower():
        return tflops * 1e12, f"{kind}: {tflops:.0f} TFLOP/s bf16 dense (datasheet)"
    return float("nan"), f"{kind}: no peak in PEAK_TFLOPS"
  n = 1024
  a = jnp.ones((n, n), jnp.float32)
  f = jax.jit(lambda x: x @ x)
  f(a).block_until_ready()
  best = min(_timed(lambda: f(a).block_until_ready()) for _ in range(reps))
  rate = 2 * n ** 3 / best
  return rate, f"CPU: {rate / 1e9:.0f} GFLOP/s float32 matmul measured now"


def _timed(fn) -> float:
  t = time.perf_counter()
  fn()
  return time.perf_counter() - t


def build(name: str, per_device: int, overrides: list[str]):
  import jax

  from sora_jax.config import load_config
  return load_config(name, overrides + [f"train.batch_size={per_device * jax.device_count()}",
                                        "train.grad_accum_steps=1"])


def model_flops(config, tx, abstract, batch) -> float:
  """FLOPs of one step as the model defines it: no rematerialisation, recurrences unrolled."""
  import jax

  from sora_jax.models import build_encoder_unchecked
  from sora_jax.training.step import make_train_step
  plain = config.copy_and_resolve_references()
  plain.model.remat, plain.model.remat_frames, plain.model.scan_layers = False, "none", False
  plain.model.attention = "xla"  # same FLOPs; lowers on the CPU backend
  plain.data.augment.on = "host"  # colour augmentation on the devices is not the model's work
  if config.model.scan_layers:  # a scanned stack's parameters are stacked: the unrolled model's are its own
    from sora_jax.training.optim import build_optimizer
    from sora_jax.training.state import init_state
    tx = build_optimizer(plain)
    abstract = jax.eval_shape(lambda: init_state(plain, tx))
  step = make_train_step(plain, build_encoder_unchecked(plain, unroll=plain.data.num_frames + 1), tx)
  spec = jax.tree_util.tree_map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), (abstract, batch))
  # Counted on the CPU backend: XLA:GPU gives no cost analysis before compiling, and the FLOPs of the
  # unoptimised module do not depend on the platform (CPU's 9 per-tap matmuls = one convolution's MACs).
  from sora_jax.models import kernels  # the Pallas GroupNorm's FLOPs as the fused form's (its interpreter's differ)
  pallas = str(kernels._FORCED.get("group_norm")).startswith("pallas")
  with jax.default_device(jax.devices("cpu")[0]), kernels.forced(group_norm="fused") if pallas else nullcontext():
    cost = jax.jit(step).lower(*spec).cost_analysis()
  return float((cost[0] if isinstance(cost, (list, tuple)) else cost)["flops"])


def host_batch(config, seed: int = 0) -> dict:
  c = config.data
  rs = np.random.RandomState(seed)
  shape = (config.train.batch_size, c.num_views, c.num_frames, c.frame_size, c.frame_size, 3)
  batch = {"video": rs.randint(0, 256, shape).astype(np.uint8),
           "label": rs.randint(0, 10, config.train.batch_size).astype(np.int32)}
  if c.augment.on == "device":  # every colour op drawn for every clip: the most the step does
    from sora_jax.data.device_augment import every_op_drawn
    batch["augment"] = every_op_drawn(shape[:3])
  return batch


def timed_steps(step, state, batch, steps: int, warmup: int = 1):
  """-> (state, [seconds per step]): each step waited for on the devices, after `warmup` steps."""
  import jax
  times = []
  for i in range(warmup + steps):
    t = time.perf_counter()
    state, m = step(state, batch)
    jax.block_until_ready(m)
    if i >= warmup:
      times.append(time.perf_counter() - t)
  return state, times


def run_config(name, config, steps, input_steps, profile_dir, peak, meta=None) -> dict:
  import jax

  from sora_jax.parallel import mesh as mesh_lib
  from sora_jax.training.step import build_step
  built = build_step(config)
  mesh = built.mesh
  batch = jax.device_put(host_batch(config), mesh_lib.batch_sharding(mesh))
  t = time.perf_counter()
  compiled = built.step.lower(built.abstract, batch).compile()
  compile_s = time.perf_counter() - t
  flops = model_flops(config, built.tx, built.abstract, batch)
  mem = compiled.memory_analysis()
  compiled_bytes = (mem.temp_size_in_bytes + mem.argument_size_in_bytes + mem.output_size_in_bytes
                    - mem.alias_size_in_bytes) if mem is not None else None
  state = built.init()
  state, times = timed_steps(compiled, state, batch, steps)
  step_s = statistics.median(times)
  t = time.perf_counter()  # back to back: the host dispatches ahead, as the training loop may
  for _ in range(steps):
    state, m = compiled(state, batch)
  jax.block_until_ready(m)
  async_s = (time.perf_counter() - t) / steps
  if profile_dir:
    with jax.profiler.trace(str(pathlib.Path(profile_dir) / name)):
      state, m = compiled(state, batch)
      jax.block_until_ready(m)
  stats = jax.devices()[0].memory_stats() or {}
  n = jax.device_count()
  row = {**(meta or {}), "xla_flags": os.environ.get("XLA_FLAGS", ""), "devices": n, "device_kind": jax.devices()[0].device_kind, "per_device_batch": config.train.batch_size // n,
         "dtype": config.model.dtype, "frames": config.data.num_frames, "frame_size": config.data.frame_size,
         "compile_s": compile_s, "step_s": step_s, "step_s_back_to_back": async_s,
         "clips_per_s": config.train.batch_size / step_s, "model_flops_per_step": flops,
         "tflops_per_s_per_device": flops / step_s / n / 1e12, "mfu": flops / step_s / n / peak,
         "process_peak_bytes": stats.get("peak_bytes_in_use"), "compiled_bytes": compiled_bytes}
  row["clips_per_s_per_device"] = row["clips_per_s"] / n
  row.update(input_bound(config, compiled, state, mesh, input_steps, step_s))
  return row


def input_bound(config, compiled, state, mesh, steps, memory_step_s) -> dict:
  """Median step time fed by the real pipeline (host batch -> global array -> step, each step
  waited for) over the step fed from device memory."""
  if steps <= 0:
    return {"input_bound_ratio": None, "input_note": "skipped"}
  try:
    import tensorflow  # noqa: F401
  except ImportError:
    return {"input_bound_ratio": None, "input_note": "tensorflow not installed: no tf.data pipeline here"}
  import jax

  from sora_jax.data.pipeline import TrainInput
  from sora_jax.errors import SoraError
  from sora_jax.parallel import distributed
  from sora_jax.training.step import device_batch
  try:
    data = TrainInput(config)
    note = config.data.name
  except SoraError:
    config = config.copy_and_resolve_references()
    config.data.name = "moving_shapes"
    data = TrainInput(config)
    note = "moving_shapes (the config's data is not here)"
  times = []
  for i in range(steps + 2):
    t = time.perf_counter()
    batch = distributed.host_to_global(device_batch(next(data), config), mesh)
    state, m = compiled(state, batch)
    jax.block_until_ready(m)
    if i >= 2:  # the pipeline's start-up is not a step
      times.append(time.perf_counter() - t)
  piped = statistics.median(times)
  return {"input_bound_ratio": piped / memory_step_s, "input_step_s": piped, "input_note": note}


def layer_table(args) -> None:
  """Median ms of forward + gradient of each GroupNorm (+ ReLU, + residual) and the stem max-pool of
  the large config's ResNet-34 at its activation shapes, flax's/XLA's autodiff vs the fused kernels (and
  the Pallas GroupNorm, --pallas), side by side in one run. Prints a table, then one JSON line."""
  import jax
  import jax.numpy as jnp

  from sora_jax.models.kernels import depthwise_conv, forced, group_norm, max_pool3x3s2
  n, s, dtype = args.layer_frames, args.layer_size, jnp.dtype(args.layer_dtype)
  key = jax.random.key(0)
  # (name, shape, groups, residual?): the stem's output, then each stage's block end
  shapes = [("stem_gn_relu", (n, s // 2, s // 2, 64), 32, False)]
  shapes += [(f"stage{i}_gn_add_relu", (n, s // 4 >> i, s // 4 >> i, 64 << i), 32, True) for i in range(4)]
  rows, result = [], {"bench": "accelerator_layers", "device": jax.devices()[0].device_kind, "frames": n,
                      "size": s, "dtype": dtype.name}

  def ms(layer, *a):
    step = jax.jit(jax.grad(lambda *a: jnp.sum(layer(*a).astype(jnp.float32) ** 2), tuple(range(len(a)))))
    jax.block_until_ready(step(*a))
    return statistics.median(_timed(lambda: jax.block_until_ready(step(*a))) for _ in range(args.steps)) * 1e3

  for name, shape, groups, residual in shapes:
    x = jax.random.normal(key, shape, dtype)
    scale, bias = jnp.ones(shape[-1]), jnp.zeros(shape[-1])
    args_ = (x, scale, bias) + ((x * 0.5,) if residual else ())
    fn = (lambda x, s, b, r: group_norm(x, s, b, groups, residual=r, relu=True)) if residual else \
        (lambda x, s, b: group_norm(x, s, b, groups, relu=True))
    t = {}
    for choice in ("flax", "fused") + (("pallas", "pallas_wide") if args.pallas else ()):
      with forced(group_norm=choice):
        t[choice] = ms(fn, *args_)
    rows.append((f"{name} {shape[1]}x{shape[2]}x{shape[3]}", t["flax"], t["fused"], t.get("pallas"),
                 t.get("pallas_wide")))
    result[name + "_ms"] = {k: round(v, 2) for k, v in t.items()}
    del x, args_
  x = jax.random.normal(key, shapes[0][1], dtype)
  t = {}
  for choice in ("xla", "masked"):
    with forced(stem_pool=choice):
      t[choice] = ms(max_pool3x3s2, x)
  rows.append((f"stem_max_pool {x.shape[1]}x{x.shape[2]}x{x.shape[3]}", t["xla"], t["masked"], None, None))
  result["stem_max_pool_ms"] = {k: round(v, 2) for k, v in t.items()}
  # EfficientNet-Lite0's depthwise convolutions (configs/imagenet.py): (block, input side, channels, kernel, stride)
  for block, side, c, k, stride in ((1, s // 2, 96, 3, 2), (3, s // 4, 144, 5, 2), (8, s // 16, 480, 5, 1),
                                    (12, s // 32, 1152, 5, 1)):
    x = jax.random.normal(key, (n, max(side, 1), max(side, 1), c), dtype)
    w = jax.random.normal(key, (k, k, 1, c), dtype)
    t = {}
    for choice in ("xla", "taps"):
      with forced(depthwise=choice):
        t[choice] = ms(lambda x, w, stride=stride: depthwise_conv(x, w, stride), x, w)
    rows.append((f"depthwise{block} {x.shape[1]}x{x.shape[2]}x{c} k{k} s{stride}", t["xla"], t["taps"], None, None))
    result[f"depthwise{block}_ms"] = {kk: round(v, 2) for kk, v in t.items()}
  print(f"layers, forward + gradient, {n} frames of {s} px, {dtype.name}, on {result['device']}: the large config's "
        "GroupNorms and stem pool, EfficientNet-Lite0's depthwise convolutions; XLA's / flax's autodiff vs sora_jax's")
  pallas = f"{'Pallas ms':>11}{'ratio':>8}{'wide ms':>9}{'ratio':>8}" if args.pallas else ""
  print(f"{'layer':<36}{'XLA ms':>12}{'ours ms':>10}{'ratio':>8}{pallas}"
        + ("  (Pallas: its interpreter on CPU)" if args.pallas and jax.default_backend() == "cpu" else ""))
  for name, a, b, c, d in rows:
    print(f"{name:<36}{a:>12.2f}{b:>10.2f}{a / b:>8.2f}" + (f"{c:>11.2f}{a / c:>8.2f}{d:>9.2f}{a / d:>8.2f}"
                                                         if c is not None else ""))
  print(json.dumps(result))


def main():
  args = parse()
  import jax
  if args.layers:
    if args.smoke:
      args.layer_frames, args.layer_size, args.steps = 4, 64, 1
    return layer_table(args)
  per_device = dict(kv.split("=") for kv in args.per_device_batch.split(","))
  overrides = {}
  for s in args.set:
    name, kv = s.split(":", 1)
    overrides.setdefault(name, []).append(kv)
  if args.smoke:  # one clip per device for the pod configs (2, 3 for a second and third batch)
    args.steps, args.input_steps = min(args.steps, 3), min(args.input_steps, 3)
    per_device = {k: "+".join(str(i + 1) for i in range(len(v.split("+")))) if k.startswith("large") else
                  "8" if k == "infonce" else v for k, v in ({"large": "1", "infonce": "8"} | per_device).items()}
  peak, peak_note = peak_flops(jax.devices()[0])
  from kernel_check import check_kernels
  kernels = check_kernels()
  print("kernels:", kernels, flush=True)
  from sora_jax.models.kernels import forced
  variants = {"": {}}
  if args.ab or args.fused:
    variants = {"[xla]": {"group_norm": "flax", "stem_pool": "xla"}, "[fused]": {"group_norm": "fused", "stem_pool": "masked"}}
    variants = {"[fused]": variants["[fused]"]} if args.fused else variants
    if args.pallas:
      variants[f"[{args.pallas}]"] = {"group_norm": args.pallas, "stem_pool": "masked"}
  rows, errors = {}, {}
  for config_name in args.configs.split(","):
    extra = (SMOKE.get(config_name, []) if args.smoke else []) + overrides.get(config_name, [])
    batches = per_device.get(config_name, "8").split("+")
    for clips in batches:
      config = build(config_name, int(clips), extra)
      for suffix, choices in variants.items():
        name = config_name + (f"@{clips}" if len(batches) > 1 else "") + suffix
        meta = {"config": config_name, "overrides": extra, "variant": suffix.strip("[]") or None}
        try:
          with forced(**choices):
            rows[name] = run_config(name, config, args.steps, args.input_steps, args.profile, peak, meta)
        except Exception as e:  # noqa: BLE001 - one config's failure is reported, the others still run
          errors[name] = f"{type(e).__name__}: {str(e).splitlines()[0][:300] if str(e) else ''}"
          print(f"{name}: {errors[name]}", file=sys.stderr)
        jax.clear_caches()

  print(f"devices: {jax.device_count()} x {jax.devices()[0].device_kind}; peak {peak_note}")
  print(f"{'config':<22}{'dtype':>9}{'T x S':>9}{'clips/dev':>10}{'compile s':>10}{'step ms':>9}{'clips/s':>9}"
        f"{'/device':>9}{'GFLOP/step':>11}{'TFLOP/s/dev':>12}{'MFU':>7}{'mem GB':>8}{'input':>7}")
  for name, r in rows.items():
    mem = r["compiled_bytes"] or float("nan")
    ratio = r["input_bound_ratio"]
    print(f"{name:<22}{r['dtype']:>9}{r['frames']:>4} x {r['frame_size']:<3}{r['per_device_batch']:>10}"
          f"{r['compile_s']:>10.1f}{r['step_s'] * 1e3:>9.1f}{r['clips_per_s']:>9.1f}{r['clips_per_s_per_device']:>9.1f}"
          f"{r['model_flops_per_step'] / 1e9:>11.1f}{r['tflops_per_s_per_device']:>12.2f}{r['mfu']:>7.1%}"
          f"{mem / 1e9:>8.2f}{'  n/a' if ratio is None else f'{ratio:>6.2f}x'}")
  print("mem GB (1e9 bytes): XLA's memory analysis of the compiled step (state + batch + temporaries + outputs; on the H200 it "
        "equalled the allocator's peak to 0.01%); "
        "input: step fed by tf.data / fed from memory (" + "; ".join(f"{k}: {r['input_note']}" for k, r in rows.items()) + ")")
  print(json.dumps({"bench": "accelerator", "jax": jax.__version__, "peak_flops_per_device": peak,
                    "peak_source": peak_note, "smoke": args.smoke, "kernels": kernels, "configs": rows,
                    "errors": errors}, default=float))


if __name__ == "__main__":
  main()
