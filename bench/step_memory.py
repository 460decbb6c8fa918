"""Train-step memory per device of a config (XLA's memory analysis of the compiled step, nothing runs)
by per-device batch and frame-encoder remat, the largest batch that fits 16 / 32 / 80 GB, and the
step time with and without remat at a small shape that runs here. Prints a table, then one JSON line.

  .venv/bin/python bench/step_memory.py [--config large] [--batches 1,2,4,8,16] [--remat none,block]
      [--time-frames 8 --time-size 64 --time-batch 2 --steps 3]  [--smoke]
  --remat block:dots is remat_frames=block with model.remat_policy=dots; --steps 0 skips the timing.
"""

from __future__ import annotations

import argparse
import json
import pathlib
import sys
import time

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

BUDGETS_GB = {"TPU v5e (16 GB)": 16, "TPU v4 (32 GB)": 32, "H100 (80 GB)": 80}


def remat_overrides(remat: str) -> list[str]:
  """'block' -> remat_frames=block; 'block:dots' -> also model.remat_policy=dots."""
  frames, _, policy = remat.partition(":")
  return [f"model.remat_frames={frames}"] + ([f"model.remat_policy={policy}"] if policy else [])


def main():
  ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  ap.add_argument("--config", default="large")
  ap.add_argument("--batches", default="1,2,4,8,16")
  ap.add_argument("--remat", default="none,block,time")
  ap.add_argument("--time-frames", "--time_frames", type=int, default=8)
  ap.add_argument("--time-size", "--time_size", type=int, default=64)
  ap.add_argument("--time-batch", "--time_batch", type=int, default=2)
  ap.add_argument("--steps", type=int, default=3)
  ap.add_argument("--smoke", action="store_true", help="tiny shapes: checks the script, not the figures")
  args = ap.parse_args()
  import jax

  from sora_jax.config import apply_overrides, load_config, validate
  from sora_jax.training.memory import step_memory
  from train_step import jax_step  # the same timed step as bench/train_step.py
  overrides = ["data.num_frames=8", "data.frame_size=32"] if args.smoke else []
  batches = [1, 2] if args.smoke else [int(b) for b in args.batches.split(",")]
  rows = []
  for remat in args.remat.split(","):
    config = validate(load_config(args.config, overrides + remat_overrides(remat)))
    for b in batches:
      t = time.perf_counter()
      m = step_memory(config, b)
      rows.append(dict(m, remat=remat, compile_s=time.perf_counter() - t))
      print(f"  remat={remat} batch={b}: {m['total'] / 1e9:.2f} GB ({rows[-1]['compile_s']:.0f} s)", flush=True)
  fits = {}
  for remat in args.remat.split(","):
    mine = sorted((r for r in rows if r["remat"] == remat), key=lambda r: r["per_device_batch"])
    if len(mine) >= 2:  # memory is affine in the batch: extrapolate from the two largest measured
      (b0, m0), (b1, m1) = [(r["per_device_batch"], r["total"]) for r in mine[-2:]]
      slope, base = (m1 - m0) / (b1 - b0), m0 - (m1 - m0) / (b1 - b0) * b0
      fits[remat] = {name: int((gb * 1e9 - base) // slope) for name, gb in BUDGETS_GB.items()}
  timing = {}
  for remat in args.remat.split(",") if args.steps else []:
    small = [f"data.num_frames={args.time_frames}", f"data.frame_size={args.time_size}",
             f"train.batch_size={args.time_batch}", "mesh.data=1", *remat_overrides(remat)]
    config = validate(apply_overrides(load_config(args.config), small + (["data.frame_size=32"] if args.smoke else [])))
    timing[remat] = jax_step(config, args.steps)["step_s"]

  d = validate(load_config(args.config, overrides)).data
  print(f"\n{args.config}: {d.num_views} views x {d.num_frames} frames at {d.frame_size} px, "
        f"{config.model.dtype}; compiled for {jax.devices()[0].platform} (XLA memory analysis, per device)")
  print(f"{'remat':<11}{'batch':>6}{'state GB':>10}{'temp GB':>9}{'total GB':>10}")
  for r in rows:
    print(f"{r['remat']:<11}{r['per_device_batch']:>6}{r['arguments'] / 1e9:>10.2f}{r['temp'] / 1e9:>9.2f}"
          f"{r['total'] / 1e9:>10.2f}")
  for remat, f in fits.items():
    print(f"largest per-device batch, remat={remat} (affine fit): " + ", ".join(f"{k} {v}" for k, v in f.items()))
  ratio = timing.get("time", float("nan")) / timing.get("none", float("nan")) if timing else float("nan")
  if timing:
    print(f"step time at {args.time_batch} x {config.data.num_views} x {args.time_frames} x {config.data.frame_size} px on "
          f"{jax.devices()[0].platform}: " + ", ".join(f"remat={k} {v:.2f} s" for k, v in timing.items())
          + f" (time/none {ratio:.2f}x)")
  print(json.dumps({"bench": "step_memory", "smoke": args.smoke, "config": args.config, "platform": jax.devices()[0].platform, "rows": rows, "fits": fits,
                    "step_s": timing, "remat_time_ratio": ratio}))


if __name__ == "__main__":
  main()
