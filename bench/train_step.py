"""Train-step benchmark: the JAX step (compile, median step time, clips/s, MFU against this
machine's measured float32 matmul rate) beside the same model and step in PyTorch, for the
infonce and seed configs (`infonce`: the default until 2026-12-05; the PyTorch twin is of its one
tower); the peak memory of an infonce training run (train.py, a few steps
with a quick kNN evaluation); the training loop's host wait per step with and without device
prefetch. Prints a table, then one JSON line.

  .venv/bin/python bench/train_step.py [--steps 5] [--skip-torch] [--skip-run] [--loop-steps 12]
"""

from __future__ import annotations

import argparse
import json
import pathlib
import resource
import subprocess
import sys
import tempfile
import time

import numpy as np

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from accelerator import timed_steps  # noqa: E402


def matmul_gflops(n: int = 1024, reps: int = 10) -> float:
  """Best float32 matmul rate of this machine through XLA (the MFU denominator)."""
  import jax
  import jax.numpy as jnp
  a = jnp.ones((n, n), jnp.float32)
  f = jax.jit(lambda x: x @ x)
  f(a).block_until_ready()
  best = min(_timed(lambda: f(a).block_until_ready()) for _ in range(reps))
  return 2 * n ** 3 / best / 1e9


def _timed(fn) -> float:
  t = time.perf_counter()
  fn()
  return time.perf_counter() - t


def jax_step(config, steps: int) -> dict:
  import jax

  from sora_jax.training.step import build_step
  built = build_step(config)
  abstract = built.abstract
  batch = _batch(config)
  t = time.perf_counter()
  compiled = built.step.lower(abstract, batch).compile()
  compile_s = time.perf_counter() - t
  cost = compiled.cost_analysis()
  flops = float((cost[0] if isinstance(cost, (list, tuple)) else cost)["flops"])
  state = built.init()
  state, times = timed_steps(compiled, state, batch, steps)
  n_params = sum(int(np.prod(x.shape)) for x in jax.tree_util.tree_leaves(abstract.params))
  return {"compile_s": compile_s, "step_s": float(np.median(times)), "flops": flops, "params": n_params}


def _batch(config):
  c = config.data
  rs = np.random.RandomState(0)
  batch = {"video": rs.randint(0, 255, (config.train.batch_size, c.num_views, c.num_frames, c.frame_size,
                                        c.frame_size, 3)).astype(np.uint8),
           "label": np.zeros(config.train.batch_size, np.int32)}
  if c.augment.on == "device":  # every colour op drawn: the most the step does
    from sora_jax.data.device_augment import every_op_drawn
    batch["augment"] = every_op_drawn((config.train.batch_size, c.num_views, c.num_frames))
  return batch


def torch_twin_fits(config) -> bool:
  m = config.model
  return (m.frame_encoder, m.temporal, m.norm, m.get("frame_input", "rgb"), m.get("frame_pool", "mean")) == (
      "seed_cnn", "lstm", "none", "rgb", "mean")


def torch_step(config, steps: int) -> dict:
  """The same encoder (seed CNN per frame -> LSTM -> MLP head), NT-Xent and AdamW in PyTorch."""
  import torch
  from torch import nn
  m = config.model
  assert torch_twin_fits(config), "torch twin: rgb frames -> seed_cnn (mean pool, no norm) -> lstm"

  class Net(nn.Module):
    def __init__(self):
      super().__init__()
      chans = [3] + [max(1, round(ch * m.width)) for ch in (64, 128, 256)]
      layers = []
      for a, b in zip(chans[:-1], chans[1:]):
        layers += [nn.Conv2d(a, b, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2, ceil_mode=True)]
      self.cnn = nn.Sequential(*layers)
      self.lstm = nn.LSTM(chans[-1], m.hidden_size, m.num_layers, batch_first=True, bidirectional=m.bidirectional)
      d = m.hidden_size * (2 if m.bidirectional else 1)
      head = []
      for _ in range(m.head_layers - 1):
        head += [nn.Linear(d, m.head_hidden), nn.ReLU()]
        d = m.head_hidden
      self.head = nn.Sequential(*head, nn.Linear(d, m.embed_dim))

    def forward(self, video):  # uint8 [N, T, H, W, 3]
      n, t = video.shape[:2]
      x = (video.float() / 255.0 - 0.5) / 0.25
      x = x.reshape(n * t, *x.shape[2:]).permute(0, 3, 1, 2)
      f = self.cnn(x).mean(dim=(2, 3)).reshape(n, t, -1)
      seq, _ = self.lstm(f)
      h = m.hidden_size
      pooled = torch.cat([seq[:, -1, :h], seq[:, 0, h:]], -1) if m.bidirectional else seq[:, -1]
      return nn.functional.normalize(self.head(pooled), dim=-1)

  torch.manual_seed(0)
  net = Net()
  opt = torch.optim.AdamW(net.parameters(), lr=1e-3, weight_decay=config.optimizer.weight_decay)
  batch = torch.from_numpy(_batch(config)["video"])
  b, v = batch.shape[:2]
  labels = torch.arange(b).repeat_interleave(v)

  def step():
    emb = net(batch.reshape(b * v, *batch.shape[2:]))
    sim = emb @ emb.T / config.objective.temperature
    sim = sim.masked_fill(torch.eye(b * v, dtype=torch.bool), float("-inf"))
    pos = (labels[:, None] == labels[None, :]) & ~torch.eye(b * v, dtype=torch.bool)
    loss = -(sim.log_softmax(-1)[pos]).mean()
    opt.zero_grad()
    loss.backward()
    torch.nn.utils.clip_grad_norm_(net.parameters(), config.optimizer.clip_norm)
    opt.step()

  t = time.perf_counter()
  step()
  first = time.perf_counter() - t
  times = [_timed(step) for _ in range(steps)]
  return {"first_step_s": first, "step_s": float(np.median(times)),
          "params": sum(p.numel() for p in net.parameters()), "threads": torch.get_num_threads()}


def peak_memory_of_default_run(steps: int) -> dict:
  """Peak RSS (max resident set) of `train.py --config configs/infonce.py` for a few steps + one quick eval."""
  with tempfile.TemporaryDirectory() as workdir:
    t = time.perf_counter()
    subprocess.run([sys.executable, str(ROOT / "train.py"), "--config", str(ROOT / "configs/infonce.py"),
                    "--workdir", workdir, f"--config.train.num_steps={steps}",
                    f"--config.train.quick_eval_every={steps}", f"--config.train.log_every={steps}"],
                   check=True, cwd=ROOT, capture_output=True)
    wall = time.perf_counter() - t
  return {"peak_rss_mb": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024, "steps": steps,
          "wall_s": wall}


def loop_wait(steps: int, overrides=()) -> dict:
  """The real training loop (`loop.train`) on the infonce config, with data.device_prefetch 2 and
  0 (twice each, interleaved): median host wait per step (the time the loop is blocked waiting for
  its next batch, the loop's data_wait_share x step_time) and step time over the steps after the
  first two (compilation)."""
  from sora_jax.config import load_config
  from sora_jax.training.loop import train
  out = {}
  for depth in (2, 0, 2, 0):
    config = load_config("infonce", [f"data.device_prefetch={depth}", f"train.num_steps={steps}", "train.log_every=1",
                                     "train.checkpoint_every=0", "train.quick_eval_every=0", *overrides])
    with tempfile.TemporaryDirectory() as workdir:
      train(config, workdir)
      rows = [json.loads(line) for line in open(pathlib.Path(workdir) / "metrics.jsonl")][2:]
    out.setdefault(f"prefetch_{depth}", []).extend(rows)  # two runs each, interleaved: noise hits both
  return {k: {"host_wait_s": float(np.median([r["data_wait_share"] * r["step_time"] for r in rows])),
              "step_s": float(np.median([r["step_time"] for r in rows])), "steps": len(rows)}
          for k, rows in out.items()}


def text_layers_cost(layers, steps: int, overrides=()) -> dict:
  """The real training loop on the `text` config with `text.train_layers` = each of `layers` (0 =
  frozen tower, cached caption features; k > 0 runs MiniLM in the step), twice each, interleaved:
  median step time over the steps after the first two, and its ratio to the frozen tower's."""
  from sora_jax.config import load_config
  from sora_jax.training.loop import train
  out = {}
  for k in [*layers, *layers]:
    config = load_config("text", [f"text.train_layers={k}", f"train.num_steps={steps}", "train.log_every=1",
                                  "train.checkpoint_every=0", "train.quick_eval_every=0", *overrides])
    with tempfile.TemporaryDirectory() as workdir:
      train(config, workdir)
      rows = [json.loads(line) for line in open(pathlib.Path(workdir) / "metrics.jsonl")]
      out.setdefault(k, []).extend(r["step_time"] for r in rows[2:] if "step_time" in r)  # first two: compiling
  step = {k: float(np.median(ts)) for k, ts in out.items()}
  return {str(k): {"step_s": s, "vs_frozen": s / step[layers[0]]} for k, s in step.items()}


def main():
  ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  ap.add_argument("--steps", type=int, default=5)
  ap.add_argument("--configs", default="infonce,seed")
  ap.add_argument("--skip-torch", "--skip_torch", action="store_true")
  ap.add_argument("--skip-run", "--skip_run", action="store_true")
  ap.add_argument("--run-steps", "--run_steps", type=int, default=10)
  ap.add_argument("--loop-steps", "--loop_steps", type=int, default=12,
                  help="steps of the loop-wait comparison (0 = skip)")
  ap.add_argument("--smoke", action="store_true", help="CI check of the script: infonce config at batch 8, 1 step, "
                  "no PyTorch, no training run, a 3-step loop comparison (the figures mean nothing)")
  ap.add_argument("--seed-batch-size", "--seed_batch_size", type=int, default=8,
                  help="global batch for the seed config (16x64x64 clips; 32 needs >14 GB on CPU)")
  ap.add_argument("--text-layers", "--text_layers", default="",
                  help="comma-separated text.train_layers values to time on the text "
                  "config's training loop (first = the reference, e.g. 0,1,2; '' = skip)")
  ap.add_argument("--text-steps", "--text_steps", type=int, default=10)
  args = ap.parse_args()
  smoke = ["train.batch_size=8"] if args.smoke else []
  if args.smoke:
    args.configs, args.steps, args.skip_torch, args.skip_run, args.loop_steps = "infonce", 1, True, True, 3
  import jax

  from sora_jax.config import apply_overrides, load_config, validate
  peak = matmul_gflops()
  rows = {}
  for name in args.configs.split(","):
    config = apply_overrides(load_config(ROOT / f"configs/{name}.py"), smoke)
    if name == "seed":
      config.train.batch_size = args.seed_batch_size
    config = validate(config)
    r = jax_step(config, args.steps)
    r["clips_per_s"] = config.train.batch_size / r["step_s"]
    r["gflops_per_s"] = r["flops"] / r["step_s"] / 1e9
    r["mfu"] = r["gflops_per_s"] / peak
    if not args.skip_torch and torch_twin_fits(config):  # else the table shows nan for torch
      t = torch_step(config, args.steps)
      r["torch"] = dict(t, clips_per_s=config.train.batch_size / t["step_s"])
      r["jax_speedup_vs_torch"] = t["step_s"] / r["step_s"]
    r["batch_size"] = config.train.batch_size
    rows[name] = r
  run = None if args.skip_run else peak_memory_of_default_run(args.run_steps)
  loop = loop_wait(args.loop_steps, smoke) if args.loop_steps else None
  text = text_layers_cost([int(k) for k in args.text_layers.split(",")], args.text_steps, smoke) \
      if args.text_layers else None

  print(f"device: {jax.devices()[0].device_kind} x{jax.device_count()}; matmul peak {peak:.1f} GFLOP/s (f32, 1024^2)")
  print(f"{'config':<9}{'batch':>6}{'params':>10}{'GFLOP/step':>11}{'compile s':>10}{'step s':>9}{'clips/s':>9}{'MFU':>7}"
        f"{'torch step s':>13}{'torch clips/s':>14}{'jax/torch':>10}")
  for name, r in rows.items():
    t = r.get("torch", {})
    print(f"{name:<9}{r['batch_size']:>6}{r['params']:>10,}{r['flops'] / 1e9:>11.2f}{r['compile_s']:>10.1f}{r['step_s']:>9.3f}"
          f"{r['clips_per_s']:>9.1f}{r['mfu']:>7.1%}{t.get('step_s', float('nan')):>13.3f}"
          f"{t.get('clips_per_s', float('nan')):>14.1f}{r.get('jax_speedup_vs_torch', float('nan')):>9.2f}x")
  if run:
    print(f"infonce training run ({run['steps']} steps + quick eval): peak RSS {run['peak_rss_mb']:.0f} MB, "
          f"wall {run['wall_s']:.0f} s")
  if loop:
    p0, p2 = loop["prefetch_0"], loop["prefetch_2"]
    print(f"training loop, infonce config, {jax.device_count()} device(s): host wait per step {p0['host_wait_s'] * 1e3:.1f} ms "
          f"without prefetch vs {p2['host_wait_s'] * 1e3:.1f} ms with data.device_prefetch=2; step {p0['step_s']:.3f} s vs "
          f"{p2['step_s']:.3f} s (medians of {p2['steps']} steps)")
  if text:
    print("text config, step time by text.train_layers: " + ", ".join(
        f"{k}: {r['step_s']:.3f} s ({r['vs_frozen']:.2f}x)" for k, r in text.items()))
  print(json.dumps({"bench": "train_step", "smoke": args.smoke, "matmul_gflops": peak, "configs": rows, "default_run": run,
                    "loop": loop, "text_layers": text}, default=float))


if __name__ == "__main__":
  main()
