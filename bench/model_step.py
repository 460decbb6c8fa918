"""Seed config forward and train-step throughput (clips/s), JAX vs the same net in PyTorch, one run.

  .venv/bin/python bench/model_step.py [--batch 8] [--iters 7] [--xla-flags "..."] [--no-torch]
  .venv/bin/python bench/model_step.py --xla-defaults   # the JAX step without kernels.compiler_options
  .venv/bin/python bench/model_step.py --kernels        # per-layer conv/pool timings behind kernels.py

Same architecture both sides (seed CNN 64/128/256 on every frame, 2-layer bidirectional LSTM 128,
linear to 128, L2-normalised), same uint8 input [8, 16, 64, 64, 3] normalised inside the step, same
loss (MSE of the embedding to fixed unit targets) and AdamW. The two frameworks alternate within each
round so background load hits both alike; medians of the timed rounds after warm-up. Prints a table,
then one JSON line.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import pathlib
import statistics
import sys
import time

ROOT = pathlib.Path(__file__).resolve().parents[1]


def parse():
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--batch", type=int, default=8)
  p.add_argument("--iters", type=int, default=7, help="timed rounds (median reported)")
  p.add_argument("--warmup", type=int, default=2)
  p.add_argument("--xla-flags", default=None, help="extra XLA_FLAGS for this run (set before jax starts)")
  p.add_argument("--unroll", type=int, default=0, help="LSTM scan unroll (0 = the model's default)")
  p.add_argument("--no-torch", action="store_true")
  p.add_argument("--xla-defaults", action="store_true",
                 help="jit the JAX side without sora_jax's compiler options (XLA:CPU's default kernels)")
  p.add_argument("--kernels", action="store_true",
                 help="instead: each seed conv's forward/input/filter gradient and each max-pool gradient, "
                      "with and without the compiler options")
  p.add_argument("--config", default=str(ROOT / "configs" / "seed.py"))
  return p.parse_args()


def jax_side(args):
  import jax
  import jax.numpy as jnp
  import numpy as np
  import optax

  sys.path.insert(0, str(ROOT))
  from sora_jax.config import load_config
  from sora_jax.models import build_encoder, init_variables, kernels

  options = {} if args.xla_defaults else kernels.compiler_options(jax.default_backend())
  config = load_config(args.config)
  model = build_encoder(config, **({"unroll": args.unroll} if args.unroll else {}))
  shape = (args.batch, config.data.num_frames, config.data.frame_size, config.data.frame_size, 3)
  params = init_variables(config, jax.random.key(0), shape)["params"]
  opt = optax.adamw(1e-3, weight_decay=1e-4)
  opt_state = opt.init(params)
  rng = np.random.default_rng(0)
  video = jnp.asarray(rng.integers(0, 256, shape, dtype=np.uint8))
  target = rng.normal(size=(args.batch, config.model.embed_dim)).astype(np.float32)
  target = jnp.asarray(target / np.linalg.norm(target, axis=-1, keepdims=True))

  @functools.partial(jax.jit, compiler_options=options)
  def forward(params, video):
    return model.apply({"params": params}, video)["embedding"]

  def loss_fn(params, video):
    e = model.apply({"params": params}, video)["embedding"]
    return jnp.mean(jnp.sum((e - target) ** 2, axis=-1))

  def step(params, opt_state, video):
    loss, grads = jax.value_and_grad(loss_fn)(params, video)
    updates, opt_state = opt.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state, loss

  step = jax.jit(step, donate_argnums=(0, 1), compiler_options=options)
  state = {"params": params, "opt": opt_state}

  def run_forward():
    forward(state["params"], video).block_until_ready()

  def run_step():
    state["params"], state["opt"], loss = step(state["params"], state["opt"], video)
    loss.block_until_ready()

  n = sum(x.size for x in jax.tree.leaves(params))
  return run_forward, run_step, n


def torch_side(args, embed_dim=128, t=16, size=64):
  import numpy as np
  import torch

  torch.manual_seed(0)

  sys.path.insert(0, str(ROOT / "bench"))
  from torch_reference import ReferenceModel
  net = ReferenceModel(embed_dim=embed_dim, pooling="last")  # sora-jax's seed pooling: each direction's final state
  opt = torch.optim.AdamW(net.parameters(), lr=1e-3, weight_decay=1e-4)
  rng = np.random.default_rng(0)
  video = torch.from_numpy(rng.integers(0, 256, (args.batch, t, size, size, 3), dtype=np.uint8))
  target = torch.nn.functional.normalize(torch.randn(args.batch, embed_dim), dim=-1)

  def run_forward():
    with torch.no_grad():
      net(video)

  def run_step():
    opt.zero_grad(set_to_none=True)
    loss = ((net(video) - target) ** 2).sum(-1).mean()
    loss.backward()
    opt.step()

  n = sum(p.numel() for p in net.parameters())
  return run_forward, run_step, n, torch.__version__, torch.get_num_threads()


def timed(fn):
  t0 = time.perf_counter()
  fn()
  return time.perf_counter() - t0


def kernel_table(args):
  """Median ms of each seed-CNN layer's kernels at [batch*16 frames]: the 3x3 conv's forward, input
  and filter gradients under XLA:CPU's defaults and under `kernels.compiler_options`; the 2x2
  max-pool's gradient (with ReLU) masked vs XLA's gradient of the reduction."""
  import jax
  import jax.numpy as jnp
  import numpy as np

  sys.path.insert(0, str(ROOT))
  from sora_jax.models import kernels

  n = args.batch * 16
  rng = np.random.default_rng(0)
  options = {"defaults": {}, "options": kernels.compiler_options(jax.default_backend())}

  def ms(f, *a):
    jax.block_until_ready(f(*a))
    return statistics.median(timed(lambda: jax.block_until_ready(f(*a))) for _ in range(args.iters)) * 1e3

  rows, result = [], {"bench": "model_step_kernels", "frames": n, "iters": args.iters}
  for size, ci, co in ((64, 3, 64), (32, 64, 128), (16, 128, 256)):
    x = jnp.asarray(rng.random((n, size, size, ci), np.float32))
    k = jnp.asarray(rng.random((3, 3, ci, co), np.float32) * 0.1)
    g = jnp.asarray(rng.random((n, size, size, co), np.float32))
    fns = {"forward": lambda x, k, g: kernels.conv3x3(x, k),
           "input_grad": lambda x, k, g: jax.vjp(lambda x: kernels.conv3x3(x, k), x)[1](g)[0],
           "filter_grad": lambda x, k, g: jax.vjp(lambda k: kernels.conv3x3(x, k), k)[1](g)[0]}
    for what, fn in fns.items():
      t = {name: ms(jax.jit(fn, compiler_options=o), x, k, g) for name, o in options.items()}
      key = f"conv{size}_{ci}_{co}_{what}"
      rows.append((key, t["defaults"], t["options"]))
      result[key + "_ms"] = {name: round(v, 1) for name, v in t.items()}
  for size, c in ((64, 64), (32, 128), (16, 256)):
    x = jnp.asarray(rng.random((n, size, size, c), np.float32) - 0.5)
    t = {p: ms(jax.jit(jax.grad(lambda x, p=p: jnp.sum(jnp.sin(jax.nn.relu(kernels.max_pool2x2(x, platform=p))))),
                       compiler_options=options["options"]), x) for p in ("native", "cpu")}
    key = f"pool{size}_{c}_grad"
    rows.append((key + " (plain | masked)", t["native"], t["cpu"]))
    result[key + "_ms"] = {"plain": round(t["native"], 1), "masked": round(t["cpu"], 1)}
  print(f"seed CNN kernels on {n} frames, jax {jax.__version__} ({jax.default_backend()}, {os.cpu_count()} cpus)")
  print(f"{'kernel':<36}{'XLA defaults ms':>17}{'ours ms':>10}{'ratio':>8}")
  for key, a, b in rows:
    print(f"{key:<36}{a:>17.1f}{b:>10.1f}{a / b:>8.2f}")
  print(json.dumps(result))


def main():
  args = parse()
  if args.xla_flags:
    os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " " + args.xla_flags).strip()
  if args.kernels:
    return kernel_table(args)
  j_fwd, j_step, j_params = jax_side(args)
  sides = {"jax": (j_fwd, j_step)}
  torch_info = None
  if not args.no_torch:
    try:
      t_fwd, t_step, t_params, t_version, t_threads = torch_side(args)
      sides["torch"] = (t_fwd, t_step)
      torch_info = {"version": t_version, "threads": t_threads, "params": t_params}
    except ImportError:
      print("PyTorch not installed: JAX figures only", file=sys.stderr)
  t0 = time.perf_counter()
  for name, (fwd, step) in sides.items():  # warm-up (JAX compiles here)
    for _ in range(args.warmup):
      fwd()
      step()
  warm_s = time.perf_counter() - t0
  times = {f"{name}_{kind}": [] for name in sides for kind in ("forward", "train_step")}
  for _ in range(args.iters):
    for name, (fwd, step) in sides.items():
      times[f"{name}_forward"].append(timed(fwd))
      times[f"{name}_train_step"].append(timed(step))
  med = {k: statistics.median(v) for k, v in times.items()}
  clips = {k: args.batch / v for k, v in med.items()}

  import jax
  print(f"seed config, clips [{args.batch}, 16, 64, 64, 3] uint8; jax {jax.__version__} "
        f"({jax.devices()[0].platform}, {os.cpu_count()} cpus), params jax {j_params:,}"
        + (f", torch {torch_info['version']} ({torch_info['threads']} threads) params {torch_info['params']:,}"
           if torch_info else ""))
  print(f"{'what':<22}{'median ms':>12}{'clips/s':>10}")
  for k in times:
    print(f"{k:<22}{med[k] * 1e3:>12.1f}{clips[k]:>10.1f}")
  result = {"bench": "model_step", "batch": args.batch, "iters": args.iters,
            "xla_flags": os.environ.get("XLA_FLAGS", ""), "warmup_s": round(warm_s, 1),
            **{f"{k}_clips_per_s": round(v, 2) for k, v in clips.items()}}
  if "torch" in sides:
    for kind in ("forward", "train_step"):
      r = clips[f"jax_{kind}"] / clips[f"torch_{kind}"]
      result[f"{kind}_ratio_jax_over_torch"] = round(r, 3)
      print(f"{kind} ratio jax/torch: {r:.2f}x")
  print(json.dumps(result))


if __name__ == "__main__":
  main()
