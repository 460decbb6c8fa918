"""What a command's process pays before its first step, as it is and as TensorFlow does by default.

Every command is a fresh process (and so is every end-to-end test): it imports TensorFlow and
builds its tf.data pipeline before it computes anything. Two choices cut that, measured here side
by side, each case in fresh processes, alternating, `--repeats` times (medians):
  - `import tensorflow` with the commands' environment (`cli.set_environment`: TF_USE_LEGACY_KERAS,
    so Keras 3 and scikit-learn stay out) against TensorFlow's default (Keras 3 loaded);
  - building the training pipeline of `infonce` at the test suite's tiny sizes and reading its first
    batch, with the map functions traced as written (`data/traced.py`) against AutoGraph's rewrite;
  - `train.py --config infonce` for 4 tiny steps end to end, with both against neither.
Wall seconds and the process's CPU seconds (all its threads: getrusage of the child). Prints a table,
then one JSON line.

  .venv/bin/python bench/startup.py               # 5 repeats
  .venv/bin/python bench/startup.py --smoke       # 1 repeat
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
TINY = ["data.num_frames=4", "data.frame_size=16", "data.num_parallel_calls=2", "model.width=0.125",
        "model.hidden_size=16", "model.head_hidden=16", "model.embed_dim=8", "train.batch_size=4",
        "train.log_every=1", "train.checkpoint_every=2", "optimizer.warmup_steps=1", "train.num_steps=4"]

# AutoGraph back on: the modules' own `as_written` replaced before anything is built.
_AUTOGRAPH = "from sora_jax.data import pipeline, sources; pipeline.as_written = sources.as_written = lambda f: f; "
_IMPORT = "import tensorflow"
_PIPELINE = ("import json, time; from sora_jax.config import load_config; from sora_jax.data import pipeline; "
             "c = load_config('infonce', {tiny!r}); t, p = time.perf_counter(), time.process_time(); "
             "next(pipeline.TrainInput(c).dataset().as_numpy_iterator()); "
             "print('BUILD', json.dumps([time.perf_counter() - t, time.process_time() - p]))")
_TRAIN = ("from sora_jax.cli import main; main(['train', '--config', 'infonce', '--workdir', {workdir!r}, "
          "'--no-quick-eval', *{overrides!r}])")


def _child(code: str, keras: bool) -> dict:
  """Runs `code` in a fresh Python -> wall and CPU seconds of the process, and its BUILD line."""
  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", TF_USE_LEGACY_KERAS="0" if keras else "1")
  env.pop("JAX_COMPILATION_CACHE_DIR", None)  # every run compiles, as a fresh machine does
  before = resource.getrusage(resource.RUSAGE_CHILDREN)
  t = time.perf_counter()
  proc = subprocess.run([sys.executable, "-c", code], env=env, cwd=ROOT, capture_output=True, text=True)
  wall = time.perf_counter() - t
  after = resource.getrusage(resource.RUSAGE_CHILDREN)
  if proc.returncode:
    sys.exit(f"bench/startup.py: a child failed:\n{(proc.stdout + proc.stderr)[-3000:]}")
  out = {"wall_s": wall, "cpu_s": (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)}
  build = [line for line in proc.stdout.splitlines() if line.startswith("BUILD ")]
  if build:
    out["build_wall_s"], out["build_cpu_s"] = json.loads(build[-1][6:])
  return out


def _cpu() -> str:
  """This machine's CPU model, and whether it has AVX-512 (the figures differ between the two EPYCs we run on)."""
  info = open("/proc/cpuinfo").read() if os.path.exists("/proc/cpuinfo") else ""
  model = next((line.split(":", 1)[1].strip() for line in info.splitlines() if line.startswith("model name")),
               platform.machine())
  return f"{model} ({'avx512' if 'avx512f' in info else 'no avx512'})"


def main(argv=None) -> int:
  ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  ap.add_argument("--repeats", type=int, default=5)
  ap.add_argument("--smoke", action="store_true", help="1 repeat (the figures mean nothing)")
  args = ap.parse_args(argv)
  repeats = 1 if args.smoke else args.repeats
  print(f"{_cpu()}, {os.cpu_count()} CPUs", flush=True)
  with tempfile.TemporaryDirectory(prefix="sora-startup-") as tmp:
    train = lambda k: _TRAIN.format(workdir=os.path.join(tmp, f"run{k}"), overrides=[f"--config.{o}" for o in TINY])
    cases = {  # name -> {variant: (code, keras)}
        "import tensorflow": {"ours": (_IMPORT, False), "default": (_IMPORT, True)},
        "pipeline: build + 1st batch": {"ours": (_PIPELINE.format(tiny=TINY), False),
                                        "default": (_AUTOGRAPH + _PIPELINE.format(tiny=TINY), False)},
        "train.py, 4 tiny steps": {"ours": (None, False), "default": (None, True)},
    }
    if not args.smoke:
      _child(_PIPELINE.format(tiny=TINY), False)  # the built-in data generated once, before any timing
    runs = {(case, v): [] for case, variants in cases.items() for v in variants}
    k = 0
    for _ in range(repeats):
      for case, variants in cases.items():
        for variant, (code, keras) in variants.items():
          if code is None:  # train: AutoGraph back with Keras
            k += 1
            code = (_AUTOGRAPH if keras else "") + train(k)
          runs[case, variant].append(_child(code, keras))

  med = lambda rows, key: statistics.median(r[key] for r in rows)
  key = {"import tensorflow": "", "pipeline: build + 1st batch": "build_", "train.py, 4 tiny steps": ""}
  rows = {}
  print(f"{'':30s} {'ours wall':>10s} {'default':>9s} {'ours CPU':>9s} {'default':>9s} {'CPU saved':>10s}"
        f"  (s, median of {repeats})")
  for case in cases:
    ours, default = runs[case, "ours"], runs[case, "default"]
    w0, w1 = med(ours, key[case] + "wall_s"), med(default, key[case] + "wall_s")
    c0, c1 = med(ours, key[case] + "cpu_s"), med(default, key[case] + "cpu_s")
    rows[case] = {"ours_wall_s": round(w0, 2), "default_wall_s": round(w1, 2), "ours_cpu_s": round(c0, 2),
                  "default_cpu_s": round(c1, 2), "cpu_ratio": round(c0 / c1, 3)}
    print(f"{case:30s} {w0:10.2f} {w1:9.2f} {c0:9.2f} {c1:9.2f} {c1 - c0:9.2f}s")
  print(json.dumps({"bench": "startup", "repeats": repeats, "machine": _cpu(),
                    "cpus": os.cpu_count(), "cases": rows}))
  return 0


if __name__ == "__main__":
  sys.exit(main())
