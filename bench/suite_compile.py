"""What the test suite pays to compile a small program on CPU, with XLA's default fusion emitters and
with the older loop emitters the suite uses (`tests/conftest.py`: --xla_cpu_use_fusion_emitters=false).

Most of the suite's CPU time is XLA:CPU compiling many small programs once each. Each case here builds
a tiny train step as the tests do (8 simulated devices, data-parallel), compiles it, runs 1 step, then
`--steps` more, in a fresh process without the persistent cache, alternating the two variants
`--repeats` times. Reported (medians): XLA's backend compile seconds (jax.monitoring), the process's CPU
seconds, the step time after compiling, and the loss after the last step, whose difference between
the variants must stay at float rounding (the bench fails otherwise). Prints a table, then one JSON line.

  .venv/bin/python bench/suite_compile.py             # 5 repeats
  .venv/bin/python bench/suite_compile.py --smoke     # 1 repeat, 2 steps
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
SMALL = ["data.num_frames=4", "data.frame_size=16", "model.width=0.25", "model.head_hidden=16", "train.batch_size=16"]
CASES = {  # config name and overrides, as the tests' tiny models
    "infonce (CNN + LSTM)": ["infonce", *SMALL],
    "infonce, ViT-Ti 2 layers": ["infonce", *SMALL, "model.frame_encoder=vit", "model.vit_size=Ti",
                                 "model.vit_depth=2", "model.vit_patch=8"],
}

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
video = np.random.RandomState(0).randint(0, 255, (c.train.batch_size, 2, c.data.num_frames, c.data.frame_size,
                                                    c.data.frame_size, 3)).astype(np.uint8)
batch = device_batch({"video": video, "label": np.zeros(c.train.batch_size, np.int32)}, c)
state, m = built.step(state, batch); jax.block_until_ready(m)
t = time.perf_counter()
for _ in range(steps):
  state, m = built.step(state, batch)
jax.block_until_ready(m)
print("RESULT", json.dumps({"compile_s": seconds["backend_compile_duration"], "step_s": (time.perf_counter() - t) / steps,
                            "cpu_s": time.process_time(), "loss": float(m["loss"])}))
"""


def _child(args: list[str], steps: int, fusion_emitters: bool) -> dict:
  flags = os.environ.get("XLA_FLAGS", "").replace(FLAG, "") + " --xla_force_host_platform_device_count=8"
  env = dict(os.environ, XLA_FLAGS=flags + ("" if fusion_emitters else " " + FLAG), JAX_PLATFORMS="cpu")
  env.pop("JAX_COMPILATION_CACHE_DIR", None)  # every run compiles
  proc = subprocess.run([sys.executable, "-c", _CHILD, *args, str(steps)], env=env, cwd=ROOT, capture_output=True,
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
  args = ap.parse_args(argv)
  repeats, steps = (1, 2) if args.smoke else (args.repeats, args.steps)
  print(f"{_cpu()}, {os.cpu_count()} CPUs", flush=True)
  runs = {(case, v): [] for case in CASES for v in ("default", "loop")}
  for _ in range(repeats):
    for case, case_args in CASES.items():
      runs[case, "default"].append(_child(case_args, steps, True))
      runs[case, "loop"].append(_child(case_args, steps, False))

  med = lambda rows, key: statistics.median(r[key] for r in rows)
  print(f"{'':26s} {'compile, default':>16s} {'loop':>6s} {'CPU, default':>12s} {'loop':>6s} {'step ms, default':>16s}"
        f" {'loop':>6s} {'|loss diff|':>11s}  (median of {repeats})")
  rows = {}
  for case in CASES:
    d, lp = runs[case, "default"], runs[case, "loop"]
    diff = max(abs(a["loss"] - b["loss"]) for a, b in zip(d, lp))
    rows[case] = {"compile_default_s": round(med(d, "compile_s"), 2), "compile_loop_s": round(med(lp, "compile_s"), 2),
                  "cpu_default_s": round(med(d, "cpu_s"), 2), "cpu_loop_s": round(med(lp, "cpu_s"), 2),
                  "step_default_ms": round(1e3 * med(d, "step_s"), 1), "step_loop_ms": round(1e3 * med(lp, "step_s"), 1),
                  "loss_diff": diff, "compile_ratio": round(med(lp, "compile_s") / med(d, "compile_s"), 3)}
    r = rows[case]
    print(f"{case:26s} {r['compile_default_s']:15.2f}s {r['compile_loop_s']:5.2f}s {r['cpu_default_s']:11.2f}s "
          f"{r['cpu_loop_s']:5.2f}s {r['step_default_ms']:16.1f} {r['step_loop_ms']:6.1f} {diff:11.2e}")
    if not diff <= 1e-4 * abs(d[0]["loss"]):
      sys.exit(f"bench/suite_compile.py: {case}: the two emitters' losses differ by {diff:.3g}, more than float rounding")
  print(json.dumps({"bench": "suite_compile", "repeats": repeats, "steps": steps, "machine": _cpu(),
                    "cpus": os.cpu_count(), "cases": rows}))
  return 0


if __name__ == "__main__":
  sys.exit(main())
