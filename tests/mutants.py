"""`make mutants`: behaviour mutations that the test suite must catch (not run by CI: minutes each).

Each mutant replaces one exact piece of source text in a temporary copy of the repository, then
runs the test files that should catch it; a mutant is killed when they fail. A surviving mutant
is a missing test. Prints a line per mutant, the score, then one JSON line.

  .venv/bin/python tests/mutants.py [--only NAME[,NAME]] [--list]
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import shutil
import subprocess
import sys
import tempfile
import time

ROOT = pathlib.Path(__file__).resolve().parents[1]

from mutant_table import MUTANTS  # noqa: E402  (this folder: sys.path[0] as a script, added by its test)


def _copy_repo(dest: pathlib.Path) -> None:
  files = subprocess.run(["git", "ls-files", "-co", "--exclude-standard"], cwd=ROOT, capture_output=True, text=True,
                         check=True).stdout.split("\n")
  for name in filter(None, files):
    src = ROOT / name
    if src.is_symlink() or not src.exists():
      if src.is_symlink():
        (dest / name).parent.mkdir(parents=True, exist_ok=True)
        os.symlink(os.readlink(src), dest / name)
      continue
    (dest / name).parent.mkdir(parents=True, exist_ok=True)
    shutil.copy2(src, dest / name)


def run_one(name: str, spec, workdir: pathlib.Path) -> dict:
  path, old, new, tests = spec
  target = workdir / path
  text = target.read_text()
  if text.count(old) != 1:
    return {"mutant": name, "status": "stale", "why": f"the original text occurs {text.count(old)} times in {path}"}
  target.write_text(text.replace(old, new))
  env = dict(os.environ, PYTHONPATH=str(workdir))  # the mutated copy, not the editable install
  t = time.perf_counter()
  try:
    proc = subprocess.run([sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider", *tests], cwd=workdir,
                          env=env, capture_output=True, text=True, timeout=1200)
    status = "killed" if proc.returncode != 0 else "survived"
  finally:
    target.write_text(text)
  return {"mutant": name, "status": status, "seconds": round(time.perf_counter() - t, 1), "tests": tests}


def main() -> int:
  ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  ap.add_argument("--only", default="", help="comma-separated mutant names")
  ap.add_argument("--list", action="store_true")
  args = ap.parse_args()
  names = [n for n in args.only.split(",") if n] or list(MUTANTS)
  if args.list:
    for n in MUTANTS:
      print(f"{n}: {MUTANTS[n][0]}")
    return 0
  results = []
  with tempfile.TemporaryDirectory(prefix="sora_mutants_") as tmp:
    workdir = pathlib.Path(tmp)
    _copy_repo(workdir)
    # Control: the unmutated copy passes the first mutant's tests (else every mutant would be
    # "killed" by a broken copy or environment, not by the tests).
    path, old, _, tests = MUTANTS[names[0]]
    control = run_one("control (no mutation)", (path, old, old, tests), workdir)
    print(f"{control['status']:>8}  control: the unmutated copy must survive", flush=True)
    if control["status"] != "survived":
      print("the unmutated copy fails its tests: fix that first", file=sys.stderr)
      return 2
    for n in names:
      r = run_one(n, MUTANTS[n], workdir)
      results.append(r)
      print(f"{r['status']:>8}  {n}  ({r.get('seconds', 0)} s)", flush=True)
  killed = sum(r["status"] == "killed" for r in results)
  print(f"\nscore: {killed}/{len(results)} mutants killed")
  print(json.dumps({"killed": killed, "total": len(results), "results": results}))
  return 0 if killed == len(results) else 1


if __name__ == "__main__":
  sys.exit(main())
