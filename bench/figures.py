"""`make figures`: reruns what the figure tables (README and docs/) come from, then rewrites those tables.

  .venv/bin/python bench/figures.py                         # every part (2-3 hours on 2 cores)
  .venv/bin/python bench/figures.py --only benchmarks       # some parts; the others keep their figures
  .venv/bin/python bench/figures.py --render                # only rewrite the tables from the JSON
  .venv/bin/python bench/figures.py --only moving_digits --seeds 3   # tables as mean ± std of 3 seeds
  .venv/bin/python bench/figures.py --only moving_digits --seeds 3 --reuse   # only what is not done yet

Each part's results are stored in bench/results/figures.json with the machine they were measured
on (date, CPU model and vector ISA, cores, load average before and after, library versions). The
blocks between `<!-- figures:PART ... -->` and `<!-- figures:PART:end -->` (in README.md or a page
of docs/) are rendered from that file alone; tests/test_figures.py checks they are, so a figure
table always has a run behind it. Prints the rendered blocks, then one JSON line.

`--reuse` keeps what is already measured with the config as it is on this CPU type: a part's
stored seed reports (so seeds can be added one session at a time) and a seed's workdir whose
training figures.py finished with the same config (its eval is rerun; `figures.json` says which
training was reused).
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

from sora_jax.config import load_config, to_dict  # noqa: E402


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


TRAINED_ON = "figures_trained_on.json"  # in a workdir figures.py trained: the CPU type (cpu_type)

# The baselines evaluated beside the default runs (the run config's own eval.baselines, plus I3D).
BASELINES = "random,supervised,i3d_kinetics"


def flat(d: dict, prefix: str = "") -> dict:
  """{"a": {"b": 1}} -> {"a.b": 1}."""
  out = {}
  for k, v in d.items():
    out.update(flat(v, f"{prefix}{k}.") if isinstance(v, dict) else {f"{prefix}{k}": v})
  return out


def same_training(saved: dict, wanted: dict) -> bool:
  """Whether two configs (as dicts) train the same run: equal in every field but eval's and the data folder."""
  keep = lambda d: {k: v for k, v in flat(d).items() if not k.startswith("eval.") and k != "data.data_dir"}
  return keep(saved) == keep(wanted)


def wanted_config(config: str, overrides: list[str]) -> dict:
  """The config `train.py --config CONFIG OVERRIDES` trains, as it is in the code today."""
  return to_dict(load_config(config, [o.removeprefix("--config.") for o in overrides]))


def cpu_type(stamp: dict) -> dict:
  """What of a machine() stamp decides a run's figures: a run on another CPU type is another run."""
  return {k: stamp.get(k) for k in ("cpu", "isa")}


def finished_training(workdir: pathlib.Path, wanted: dict) -> bool:
  """Whether `workdir` holds a run of `wanted` trained to its last step on this CPU type."""
  saved, trained_on = workdir / "config.json", workdir / TRAINED_ON
  last = workdir / "checkpoints" / str(wanted["train"]["num_steps"])
  return (saved.exists() and last.is_dir() and trained_on.exists() and same_training(json.loads(saved.read_text()), wanted)
          and json.loads(trained_on.read_text()) == cpu_type(machine()))


def run_eval_part(name: str, overrides: list[str], workdir: pathlib.Path, logs: pathlib.Path,
                  config: str = "default", baselines: str | None = None, reuse: bool = False) -> dict:
  """A named config (default: `default`) trained and evaluated on one built-in dataset (a fresh
  workdir, or with `reuse` a finished one of the same config); `baselines`: eval.py's --baselines
  (default: the config's)."""
  py = sys.executable
  reused = reuse and finished_training(workdir, wanted_config(config, overrides))
  if workdir.exists() and not reused:
    subprocess.run(["rm", "-rf", str(workdir)], check=True)
  train_s = None
  if reused:
    print(f"figures: {workdir} finished training with this config: evaluating it again", file=sys.stderr)
  else:
    t0 = time.time()
    _run([py, "train.py", "--config", config, "--workdir", str(workdir), *overrides], logs / f"{name}-train.log")
    train_s = round(time.time() - t0, 1)
    (workdir / TRAINED_ON).write_text(json.dumps(cpu_type(machine())))
  t0 = time.time()
  _run([py, "eval.py", "--workdir", str(workdir), "--no-progress", *(["--baselines", baselines] if baselines else [])],
       logs / f"{name}-eval.log")
  eval_s = round(time.time() - t0, 1)
  report = json.loads((workdir / "eval" / "report.json").read_text())
  return {"command": " ".join([f"train.py --config {config}", *overrides]), "overrides": overrides,
          "baselines": baselines,
          "config": json.loads((workdir / "config.json").read_text()),
          "train_s": train_s, "eval_s": eval_s, **({"training_reused": str(workdir)} if reused else {}),
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
  figures are seed 0's; with several seeds `seed_reports` holds every seed's report, saved as each
  seed ends. With `reuse`, a stored part of the same config and baselines keeps its seeds and only
  the missing ones run."""
  def run(logs: pathlib.Path, seeds: int, stored: dict | None = None, reuse: bool = False, save=None) -> dict:
    kept = reuse and stored and stored.get("baselines") == baselines and stored.get("overrides") == overrides \
        and cpu_type(stored["machine"]) == cpu_type(machine()) \
        and same_training(stored["config"], wanted_config(config, overrides))
    first = dict(stored) if kept else run_eval_part(name, overrides, workdir, logs, config, baselines, reuse)
    if kept:
      print(f"figures: {name}: seed 0 as stored ({stored['machine']['date']})", file=sys.stderr)
    if seeds > 1:
      done = (first.get("seed_reports") or [first["report"]])[:seeds]
      reused = list(first.get("seeds_training_reused", []))
      for s in range(len(done), seeds):
        if save:
          save({**first, "seed_reports": list(done), **({"seeds_training_reused": list(reused)} if reused else {})})
        part = run_eval_part(f"{name}-seed{s}", [*overrides, f"--config.seed={s}"],
                             workdir.with_name(f"{workdir.name}-seed{s}"), logs, config, baselines, reuse)
        done.append(part["report"])
        reused += [s] if "training_reused" in part else []
      first["seed_reports"] = done
      first.update({"seeds_training_reused": reused} if reused else {})
    return first
  return run


PARTS = {
    "moving_shapes": seeded("moving_shapes", [], ROOT / "runs" / "figures-moving_shapes", baselines=BASELINES),
    "moving_digits": seeded("moving_digits", ["--config.data.name=moving_digits"], ROOT / "runs" / "figures-moving_digits",
                            baselines=BASELINES),
    "benchmarks": lambda logs, seeds, stored=None, reuse=False, save=None: run_benchmarks(logs),
    "text": seeded("text", [], ROOT / "runs" / "figures-text", config="text"),
}


def main() -> int:
  ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  ap.add_argument("--only", default=",".join(PARTS), help=f"comma-separated parts of {list(PARTS)}")
  ap.add_argument("--render", action="store_true", help="rewrite the tables in README.md and docs/ from figures.json; run nothing")
  ap.add_argument("--seeds", type=int, default=1, help="train and evaluate each model part with seeds 0..N-1; the "
                  "README tables show mean ± std (N >= 2)")
  ap.add_argument("--reuse", action="store_true", help="keep stored seeds and finished trainings of the config as "
                  "it is; run only what is missing")
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

      def save(figures: dict, part=part, stamp=stamp):  # after each part, and each seed: nothing lost
        results[part] = {"machine": {**stamp, "load": [*stamp["load"], round(os.getloadavg()[0], 2)]}, **figures}
        RESULTS.write_text(json.dumps(results, indent=1, sort_keys=True) + "\n")
      save(PARTS[part](logs, args.seeds, results.get(part), args.reuse, save))
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
