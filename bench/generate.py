"""Sampling speed of the video generator: clips/s by batch, guidance on and off, against the MSE decoder.

The `generate` config's generator (or a trained run's, `--workdir`), with its own parameters (or random
ones: the speed does not depend on the values), on this machine's devices through the one sampler
(`evaluation.sampler.Sampler`: one jitted Euler step per sampling step, samples split over the mesh).
Each row: median wall time of `--repeats` full samplings after one warm-up (compile); clips/s =
batch / median. Guidance 1 calls the network once per step, any other scale twice (conditional and
unconditional in one batch); the MSE decoder calls it once in all.

  .venv/bin/python bench/generate.py                         # the generate config, batches 1, 16, 64
  .venv/bin/python bench/generate.py --workdir runs/generate  # a trained generator
  .venv/bin/python bench/generate.py --smoke                  # tiny sizes (CI)
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))


def _setup(args):
  """-> (config, generator parameters, mesh): a trained run's, or the generate config's at random."""
  import jax

  from sora_jax.config import load_config
  from sora_jax.models.generator import build_generator
  from sora_jax.parallel import mesh as mesh_lib
  if args.workdir:
    from sora_jax.objectives import sampling_generator
    from sora_jax.training.checkpoint import load_run
    config, _, objective, _ = load_run(args.workdir)
    return config, sampling_generator(objective), mesh_lib.inference_mesh(config)
  config = load_config("generate")
  if args.smoke:
    config.data.num_frames, config.data.frame_size = 2, 8
    config.generate.width, config.generate.depth, config.generate.num_heads = 16, 1, 2
    config.generate.patch_size, config.generate.sample_steps = 4, 2
  d = config.data
  params = build_generator(config).init(
      jax.random.PRNGKey(0), np.zeros((1, d.num_frames, d.frame_size, d.frame_size, 3), np.float32),
      np.zeros((1,), np.float32), np.zeros((1, args.cond_dim), np.float32))["params"]
  return config, params, mesh_lib.inference_mesh(config)


def _median(fn, repeats):
  fn()  # compile
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    fn()
    times.append(time.perf_counter() - start)
  return statistics.median(times)


def main(argv=None):
  p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--workdir", default=None, help="a trained generator run (default: the generate config, random weights)")
  p.add_argument("--batches", default="1,16,64", help="clips per sampling call")
  p.add_argument("--repeats", type=int, default=3)
  p.add_argument("--cond-dim", type=int, default=64, help="condition width without --workdir (model.embed_dim)")
  p.add_argument("--smoke", action="store_true", help="tiny model and clips, batches 1 and 8, one repeat")
  args = p.parse_args(argv)
  if args.smoke:
    args.batches, args.repeats = "1,8", 1
  import copy

  import jax

  from sora_jax.evaluation.sampler import Sampler
  config, params, mesh = _setup(args)
  g = config.generate
  mse = copy.deepcopy(config)
  mse.generate.method = "mse"
  samplers = {"flow": Sampler(config, params, mesh), "mse": Sampler(mse, params, mesh)}  # same network
  cond_dim = params["cond_in"]["kernel"].shape[0]
  rows = []
  for batch in [int(b) for b in args.batches.split(",")]:
    cond = np.random.default_rng(0).standard_normal((batch, cond_dim)).astype(np.float32)
    timing = {}
    for name, sampler, guidance in (("flow, guidance 1", samplers["flow"], 1.0),
                                    (f"flow, guidance {g.guidance:g}", samplers["flow"], g.guidance),
                                    ("mse decoder", samplers["mse"], None)):
      timing[name] = _median(lambda: sampler.sample(cond, seed=0, guidance=guidance), args.repeats)
    base = timing["mse decoder"]
    for name, seconds in timing.items():
      rows.append({"batch": batch, "model": name, "seconds": seconds, "clips_per_sec": batch / seconds,
                   "time_vs_mse": seconds / base})
  print(f"generator width {g.width} depth {g.depth} patch {g.patch_size}, clips {config.data.num_frames}x"
        f"{config.data.frame_size}x{config.data.frame_size}, {g.sample_steps} Euler steps; {mesh.size} "
        f"{jax.devices()[0].platform} device(s), {platform.processor() or platform.machine()}")
  print(f"{'batch':>5}  {'model':<22} {'s/call':>8} {'clips/s':>9} {'x mse':>7}")
  for r in rows:
    print(f"{r['batch']:>5}  {r['model']:<22} {r['seconds']:>8.3f} {r['clips_per_sec']:>9.1f} {r['time_vs_mse']:>7.1f}")
  print(json.dumps({"bench": "generate", "sample_steps": g.sample_steps, "width": g.width, "depth": g.depth,
                    "patch": g.patch_size, "devices": mesh.size, "platform": jax.devices()[0].platform, "rows": rows}))


if __name__ == "__main__":
  main()
