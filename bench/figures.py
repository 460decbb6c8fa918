"""`make figures`: reruns what the figure tables (README and docs/) come from, then rewrites those tables.

  .venv/bin/python bench/figures.py                         # every part (2-3 hours on 2 cores)
  .venv/bin/python bench/figures.py --only benchmarks       # some parts; the others keep their figures
  .venv/bin/python bench/figures.py --render                # only rewrite the tables from the JSON
  .venv/bin/python bench/figures.py --only moving_digits --seeds 3   # tables as mean ± std of 3 seeds

Each part's results are stored in bench/results/figures.json with the machine they were measured
on (date, CPU model and vector ISA, cores, load average before and after, library versions). The
blocks between `<!-- figures:PART ... -->` and `<!-- figures:PART:end -->` (in README.md or a page
of docs/) are rendered from that file alone; tests/test_figures.py checks they are, so a figure
table always has a run behind it. Prints the rendered blocks, then one JSON line.
"""

from __future__ import annotations

import argparse
import datetime
import importlib.metadata
import json
import os
import pathlib
import platform
import re
import subprocess
import sys
import time

ROOT = pathlib.Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results" / "figures.json"
PACKAGES = ("jax", "jaxlib", "flax", "optax", "orbax-checkpoint", "tensorflow", "tensorflow-cpu", "tensorflow-datasets",
            "torch", "faiss-cpu")

sys.path[:0] = [str(ROOT), str(ROOT / "bench")]
import figure_tables  # noqa: E402  (the rendering: no jax; tests/test_figures.py imports it too)


def machine() -> dict:
  """What a figure depends on besides the code."""
  info = pathlib.Path("/proc/cpuinfo").read_text() if pathlib.Path("/proc/cpuinfo").exists() else ""
  model = re.search(r"^model name\s*:\s*(.+)$", info, re.M)
  isa = next((f for f in ("avx512f", "avx2", "avx") if re.search(rf"\b{f}\b", info)), platform.machine())
  versions = {"python": platform.python_version()}
  for name in PACKAGES:
    try:
      versions[name] = importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
      pass
  return {"date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d"),
          "cpu": model.group(1).strip() if model else platform.processor(), "isa": isa.replace("avx512f", "avx512"),
          "cores": len(os.sched_getaffinity(0)), "load": [round(os.getloadavg()[0], 2)], "versions": versions}


def _run(cmd: list[str], log: pathlib.Path) -> str:
  """Runs one command (output kept in `log`); its stdout, or a one-line error naming the log."""
  print("$", " ".join(cmd), file=sys.stderr, flush=True)
  with open(log, "w") as f:
    proc = subprocess.run(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=f, text=True)
  with open(log, "a") as f:
    f.write(proc.stdout)
  if proc.returncode:
    sys.exit(f"figures: `{' '.join(cmd)}` failed (exit {proc.returncode}); its output is in {log}")
  return proc.stdout


# The baselines evaluated beside the default runs (the run config's own eval.baselines, plus I3D).
BASELINES = "random,supervised,i3d_kinetics"


def run_eval_part(name: str, overrides: list[str], workdir: pathlib.Path, logs: pathlib.Path,
                  config: str = "default", baselines: str | None = None) -> dict:
  """A named config (default: `default`) trained and evaluated on one built-in dataset (a fresh
  workdir); `baselines`: eval.py's --baselines (default: the config's)."""
  py = sys.executable
  if workdir.exists():
    subprocess.run(["rm", "-rf", str(workdir)], check=True)
  t0 = time.time()
  _run([py, "train.py", "--config", config, "--workdir", str(workdir), *overrides],
       logs / f"{name}-train.log")
  train_s = time.time() - t0
  _run([py, "eval.py", "--workdir", str(workdir), "--no-progress", *(["--baselines", baselines] if baselines else [])],
       logs / f"{name}-eval.log")
  report = json.loads((workdir / "eval" / "report.json").read_text())
  return {"command": " ".join([f"train.py --config {config}", *overrides]), "overrides": overrides,
          "baselines": baselines,
          "config": json.loads((workdir / "config.json").read_text()), "train_s": round(train_s, 1),
          "eval_s": round(time.time() - t0 - train_s, 1),
          "report": {k: report.get(k) for k in ("models", "chance", "checkpoint_step", "dataset", "protocol", "text",
                                                "text_baselines") if k in report}}


def run_benchmarks(logs: pathlib.Path) -> dict:
  """Each benchmark with the README's flags; its last line (JSON) kept whole."""
  out = {}
  for key, bench in figure_tables.BENCHMARKS.items():
    stdout = _run([sys.executable, f"bench/{bench['script']}", *bench["args"]], logs / f"bench-{key}.log")
    out[key] = json.loads(stdout.strip().splitlines()[-1])
  return out


def seeded(name: str, overrides: list[str], workdir: pathlib.Path, config: str = "default", baselines=None):
  """A part that trains and evaluates `config` once per seed (seed 0: `workdir` and the given
  overrides, as a single-seed part; seed s > 0: `workdir`-seed{s} with --config.seed=s). The part's
  figures are seed 0's; with several seeds `seed_reports` holds every seed's report."""
  def run(logs: pathlib.Path, seeds: int) -> dict:
    first = run_eval_part(name, overrides, workdir, logs, config, baselines)
    if seeds > 1:
      first["seed_reports"] = [first["report"]] + [
          run_eval_part(f"{name}-seed{s}", [*overrides, f"--config.seed={s}"], workdir.with_name(f"{workdir.name}-seed{s}"),
                        logs, config, baselines)["report"] for s in range(1, seeds)]
    return first
  return run


PARTS = {
    "moving_shapes": seeded("moving_shapes", [], ROOT / "runs" / "figures-moving_shapes", baselines=BASELINES),
    "moving_digits": seeded("moving_digits", ["--config.data.name=moving_digits"], ROOT / "runs" / "figures-moving_digits",
                            baselines=BASELINES),
    "benchmarks": lambda logs, seeds: run_benchmarks(logs),
    "text": seeded("text", [], ROOT / "runs" / "figures-text", config="text"),
}


def main() -> int:
  ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  ap.add_argument("--only", default=",".join(PARTS), help=f"comma-separated parts of {list(PARTS)}")
  ap.add_argument("--render", action="store_true", help="rewrite the tables in README.md and docs/ from figures.json; run nothing")
  ap.add_argument("--seeds", type=int, default=1, help="train and evaluate each model part with seeds 0..N-1; the "
                  "README tables show mean ± std (N >= 2)")
  args = ap.parse_args()
  results = json.loads(RESULTS.read_text()) if RESULTS.exists() else {}
  if not args.render:
    parts = [p for p in args.only.split(",") if p]
    unknown = sorted(set(parts) - set(PARTS))
    if unknown:
      sys.exit(f"figures: no part {unknown[0]!r}; choose among {', '.join(PARTS)}")
    logs = ROOT / "runs" / "figures-logs"
    logs.mkdir(parents=True, exist_ok=True)
    for part in parts:
      stamp = machine()
      figures = PARTS[part](logs, args.seeds)
      stamp["load"].append(round(os.getloadavg()[0], 2))
      results[part] = {"machine": stamp, **figures}
      RESULTS.write_text(json.dumps(results, indent=1, sort_keys=True) + "\n")  # a part at a time: nothing lost
  results = json.loads(RESULTS.read_text()) if RESULTS.exists() else {}  # as stored (sorted keys): what
  texts = {f: f.read_text() for f in figure_tables.documents(ROOT)}
  for f, text in figure_tables.rewrite_all(texts, results).items():  # tests/test_figures.py renders too
    if text != texts[f]:
      f.write_text(text)
  for part in results:
    print(figure_tables.render(part, results[part]), end="\n\n")
  print(json.dumps({"bench": "figures", "parts": sorted(results), "results": str(RESULTS.relative_to(ROOT))}))
  return 0


if __name__ == "__main__":
  sys.exit(main())
