"""What the test suite pays to compile a small program on CPU: with XLA's defaults, with the older loop
emitters, and with those and LLVM at -O1, as the suite compiles (`tests/conftest.py`).

Most of the suite's CPU time is XLA:CPU compiling many small programs once each. Each case here builds
a tiny train step as the tests do (8 simulated devices, data-parallel; the state's init compiled at -O0
as `BuiltStep.init` does), then compiles the encoder's init jitted plainly as most tests jit it (threefry
keys: its multi-dimensional random draws are what XLA:CPU's LLVM -O2 is slowest on), runs 1 step, then
`--steps` more, in a fresh process without the persistent cache, alternating the variants `--repeats`
times. Reported (medians): XLA's backend compile seconds of the step (with the state's init) and of the
plain init (jax.monitoring), the process's CPU seconds, the step time after compiling, and how far the
loss is from the default's after one update (float rounding, or the bench fails) and after the last
(rounding amplified by training; reported). Prints a table, then one JSON line. `--smoke`: the first
case only.

`--memory`: instead, the seconds `training.memory.step_memory` takes (the `model-summary` memory line:
a compile for XLA's memory analysis, never run) with LLVM optimisation as training compiles and without
it, as it compiles on CPU; the figures must be the same bytes (the bench fails otherwise).

  .venv/bin/python bench/suite_compile.py             # 5 repeats
  .venv/bin/python bench/suite_compile.py --smoke     # 1 repeat, 2 steps
  .venv/bin/python bench/suite_compile.py --memory --repeats 3
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from startup import ROOT, _cpu  # noqa: E402

FLAG = "--xla_cpu_use_fusion_emitters=false"
VARIANTS = {"default": "", "loop": FLAG, "loop, -O1": f"{FLAG} --xla_backend_optimization_level=1"}
SMALL = ["data.num_frames=4", "data.frame_size=16", "model.width=0.25", "model.head_hidden=16", "train.batch_size=16"]
CASES = {  # config name and overrides, as the tests' tiny models
    "infonce (CNN + LSTM)": ["infonce", *SMALL],
    "infonce, ViT-Ti 2 layers": ["infonce", *SMALL, "model.frame_encoder=vit", "model.vit_size=Ti",
                                 "model.vit_depth=2", "model.vit_patch=8"],
    "infonce, ResNet-18": ["infonce", *SMALL, "model.frame_encoder=resnet", "model.width=0.125"],
}
MEMORY_CASES = {  # config name, overrides, clips per device
    "tiny ResNet-18": ["infonce", "model.frame_encoder=resnet", "model.width=0.125", "model.hidden_size=8",
                       "model.embed_dim=8", "model.head_hidden=16", "data.frame_size=16", "data.num_frames=2", "2"],
    "pod example (`large`, remat_frames=time)": ["large", "model.remat_frames=time", "1"],
}

_MEMORY_CHILD = """
import json, sys, time
from sora_jax.cli import set_environment; set_environment()
from sora_jax.config import load_config, validate
from sora_jax.training import memory
if sys.argv[-1] == "optimised":
  memory._options = lambda device: None
t = time.perf_counter()
m = memory.step_memory(validate(load_config(sys.argv[1], sys.argv[2:-2])), int(sys.argv[-2]))
print("RESULT", json.dumps({"seconds": time.perf_counter() - t, "memory": m}))
"""

_CHILD = """
import collections, json, sys, time
from sora_jax.cli import set_environment; set_environment()
import jax, jax.monitoring, numpy as np
seconds = collections.Counter()
jax.monitoring.register_event_duration_secs_listener(lambda e, d, **_: seconds.update({e.rsplit('/', 1)[-1]: d}))
from sora_jax.config import load_config
from sora_jax.parallel import mesh as mesh_lib
from sora_jax.training.step import build_step, device_batch
args, steps = sys.argv[1:-1], int(sys.argv[-1])
c = load_config(args[0], args[1:])
built = build_step(c, mesh_lib.make_mesh(c))
state = built.init()
spent = seconds["backend_compile_duration"]  # then the encoder's init jitted plainly, as most tests jit it
from sora_jax.models import build_encoder
dummy = jax.numpy.zeros((2, c.data.num_frames, c.data.frame_size, c.data.frame_size, 3), jax.numpy.uint8)
jax.jit(lambda k: build_encoder(c).init(k, dummy, train=False)).lower(jax.random.PRNGKey(0)).compile()
init_s = seconds["backend_compile_duration"] - spent
video = np.random.RandomState(0).randint(0, 255, (c.train.batch_size, 2, c.data.num_frames, c.data.frame_size,
                                                    c.data.frame_size, 3)).astype(np.uint8)
batch = device_batch({"video": video, "label": np.zeros(c.train.batch_size, np.int32)}, c)
state, m = built.step(state, batch); jax.block_until_ready(m)
t = time.perf_counter()
ms = []
for _ in range(steps):
  state, m = built.step(state, batch)
  ms.append(m)
jax.block_until_ready(ms)
step_s = (time.perf_counter() - t) / steps
print("RESULT", json.dumps({"compile_s": seconds["backend_compile_duration"] - init_s, "init_s": init_s, "step_s": step_s,
                            "cpu_s": time.process_time(), "loss_1": float(ms[0]["loss"]), "loss": float(ms[-1]["loss"])}))
"""


def _child(args: list[str], flags: str, code: str = _CHILD) -> dict:
  base = " ".join(f for f in os.environ.get("XLA_FLAGS", "").split() if "xla_cpu_use_fusion_emitters" not in f
                  and "xla_backend_optimization_level" not in f)
  env = dict(os.environ, XLA_FLAGS=f"{base} --xla_force_host_platform_device_count=8 {flags}", JAX_PLATFORMS="cpu")
  env.pop("JAX_COMPILATION_CACHE_DIR", None)  # every run compiles
  proc = subprocess.run([sys.executable, "-c", code, *args], env=env, cwd=ROOT, capture_output=True,
                        text=True)
  result = [line for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
  if proc.returncode or not result:
    sys.exit(f"bench/suite_compile.py: a child failed:\n{(proc.stdout + proc.stderr)[-3000:]}")
  return json.loads(result[-1][7:])


def main(argv=None) -> int:
  ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  ap.add_argument("--repeats", type=int, default=5)
  ap.add_argument("--steps", type=int, default=5)
  ap.add_argument("--smoke", action="store_true", help="1 repeat, 2 steps (the figures mean nothing)")
  ap.add_argument("--memory", action="store_true", help="step_memory's compile, optimised vs unoptimised")
  args = ap.parse_args(argv)
  repeats, steps = (1, 2) if args.smoke else (args.repeats, args.steps)
  print(f"{_cpu()}, {os.cpu_count()} CPUs", flush=True)
  if args.memory:
    return _memory(repeats, smoke=args.smoke)
  cases = dict(list(CASES.items())[:1]) if args.smoke else CASES
  runs = {(case, v): [] for case in cases for v in VARIANTS}
  for _ in range(repeats):
    for case, case_args in cases.items():
      for v, flags in VARIANTS.items():
        runs[case, v].append(_child([*case_args, str(steps)], flags))

  med = lambda rows, key: statistics.median(r[key] for r in rows)
  print(f"{'':26s} {'variant':12s} {'step compile':>12s} {'jit(init)':>9s} {'CPU':>7s} {'step ms':>8s} {'diff, 1 update':>14s}"
        f" {'diff, last':>10s}  (median of {repeats}; loss differences from `default`)")
  rows = {}
  for case in cases:
    rows[case] = {}
    for v in VARIANTS:
      rs, d = runs[case, v], runs[case, "default"]
      first = max(abs(a["loss_1"] - b["loss_1"]) for a, b in zip(d, rs))
      diff = max(abs(a["loss"] - b["loss"]) for a, b in zip(d, rs))
      r = rows[case][v] = {"step_compile_s": round(med(rs, "compile_s"), 2), "init_compile_s": round(med(rs, "init_s"), 2),
                           "cpu_s": round(med(rs, "cpu_s"), 2), "step_ms": round(1e3 * med(rs, "step_s"), 1),
                           "loss_diff_1": first, "loss_diff": diff}
      print(f"{case:26s} {v:12s} {r['step_compile_s']:11.2f}s {r['init_compile_s']:8.2f}s {r['cpu_s']:6.2f}s "
            f"{r['step_ms']:8.1f} {first:14.2e} {diff:10.2e}")
      # After one update the variants must agree to float rounding; later steps amplify any rounding
      # (a ResNet overfitting one batch: 1 ulp after one update, 5e-4 of the loss after six), reported only.
      if not first <= 1e-6 * abs(d[0]["loss_1"]) + 1e-7:
        sys.exit(f"bench/suite_compile.py: {case}: {v}'s loss after one update differs from the default's by "
                 f"{first:.3g}, more than float rounding")
  print(json.dumps({"bench": "suite_compile", "repeats": repeats, "steps": steps, "machine": _cpu(),
                    "cpus": os.cpu_count(), "variants": VARIANTS, "cases": rows}))
  return 0


def _memory(repeats: int, smoke: bool) -> int:
  cases = dict(list(MEMORY_CASES.items())[:1]) if smoke else MEMORY_CASES
  runs = {(case, v): [] for case in cases for v in ("optimised", "unoptimised")}
  for _ in range(repeats):
    for case, case_args in cases.items():
      for v in ("optimised", "unoptimised"):  # XLA's default flags, as `model-summary` runs
        runs[case, v].append(_child([*case_args, v], "", code=_MEMORY_CHILD))
  print(f"{'':42s} {'optimised':>10s} {'unoptimised':>12s} {'ratio':>6s} {'total bytes':>14s}  (median of {repeats})")
  rows = {}
  for case in cases:
    o, u = runs[case, "optimised"], runs[case, "unoptimised"]
    if any(r["memory"] != o[0]["memory"] for r in o + u):
      sys.exit(f"bench/suite_compile.py: {case}: the unoptimised compile planned other bytes: "
               f"{o[0]['memory']} vs {u[0]['memory']}")
    so, su = statistics.median(r["seconds"] for r in o), statistics.median(r["seconds"] for r in u)
    rows[case] = {"optimised_s": round(so, 2), "unoptimised_s": round(su, 2), "ratio": round(su / so, 3),
                  "total_bytes": o[0]["memory"]["total"]}
    print(f"{case:42s} {so:9.2f}s {su:11.2f}s {su / so:6.2f} {o[0]['memory']['total']:14d}")
  print(json.dumps({"bench": "suite_compile_memory", "repeats": repeats, "machine": _cpu(), "cpus": os.cpu_count(),
                    "cases": rows}))
  return 0


if __name__ == "__main__":
  sys.exit(main())
