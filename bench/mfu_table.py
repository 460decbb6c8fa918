"""The accelerator table: each measured step of bench/accelerator.py's JSON lines beside its roofline
ceiling (bench/roofline.py for the same config, clips per device and device), as markdown, then one
JSON line. `--into FILE` also replaces the block between `<!-- mfu -->` and `<!-- mfu:end -->` in FILE.

  python bench/mfu_table.py accelerator_out/*.json                        # after MODE=mfu bash bench/on_accelerator.sh
  python bench/mfu_table.py accelerator_out/*.json --into docs/benchmarks.md

The ceiling is the device's (matched from the JSON's device kind); rows from a device roofline.py has
no bandwidth for (a CPU smoke run) take --device's.
"""

from __future__ import annotations

import argparse
import json
import pathlib
import re
import sys

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

import accelerator  # noqa: E402
import roofline  # noqa: E402

BEGIN, END = "<!-- mfu -->", "<!-- mfu:end -->"


def parse(argv=None):
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("results", nargs="+", help="files whose JSON lines include bench/accelerator.py's")
  p.add_argument("--device", default="H100", choices=sorted(roofline.HBM_TB_PER_S),
                 help="roofline device for rows measured on a device without one (CPU)")
  p.add_argument("--into", default="", help="markdown file whose mfu block is replaced by the table")
  return p.parse_args(argv)


def measured_rows(paths) -> list[tuple[str, dict]]:
  """(row name, row) of every configs entry of every accelerator JSON line in `paths`, in order."""
  rows = []
  for path in paths:
    for line in pathlib.Path(path).read_text().splitlines():
      if line.startswith("{") and '"bench": "accelerator"' in line:
        rows += list(json.loads(line)["configs"].items())
  if not rows:
    raise SystemExit(f"no bench/accelerator.py JSON line in {', '.join(map(str, paths))}")
  return rows


def device_of(kind: str, fallback: str) -> str:
  return next((key for key in sorted(roofline.HBM_TB_PER_S, key=len, reverse=True) if key.lower() in kind.lower()),
              fallback)


def ceiling(row: dict, device: str) -> float:
  """Roofline MFU ceiling of the row's config at its clips per device on `device` (every kernel at its roofline)."""
  from sora_jax.config import load_config
  clips = row["per_device_batch"]
  config = load_config(row["config"], list(row.get("overrides", [])) + [
      f"train.batch_size={clips}", "train.grad_accum_steps=1", "mesh.data=1", "mesh.fsdp=1"])
  peak = dict(accelerator.PEAK_TFLOPS)[device] * 1e12
  table = roofline.roofline(roofline.record_layers(config, clips), peak, roofline.HBM_TB_PER_S[device] * 1e12)
  return roofline.ceilings(table, peak, None, 0.4, flops=row["model_flops_per_step"])["mfu_all_at_roofline"]


def table(rows: list[tuple[str, dict]], fallback: str) -> tuple[str, list[dict]]:
  lines = ["| run | device | clips per device | step ms | clips/s | TFLOP/s | MFU | roofline ceiling | "
           "share of ceiling | memory GB | compile s |", "|---|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|"]
  out = []
  for name, r in rows:
    device = device_of(r["device_kind"], fallback)
    top = ceiling(r, device)
    flags = f" `{r['xla_flags'].strip()}`" if r.get("xla_flags", "").strip() else ""
    extra = [o for o in r.get("overrides", []) if o.startswith("model.")]
    label = f"`{name}`" + (f" ({', '.join(extra)})" if extra else "") + flags
    mem = r.get("compiled_bytes")
    lines.append(f"| {label} | {r['device_kind']} | {r['per_device_batch']} | {r['step_s'] * 1e3:.1f} | "
                 f"{r['clips_per_s']:.1f} | {r['tflops_per_s_per_device']:.1f} | {r['mfu']:.1%} | {top:.1%}"
                 f"{'' if device.lower() in r['device_kind'].lower() else f' ({device})'} | {r['mfu'] / top:.0%} | "
                 f"{'' if mem is None else f'{mem / 1e9:.2f}'} | {r['compile_s']:.1f} |")
    out.append({"run": name, "device": r["device_kind"], "roofline_device": device, "mfu": r["mfu"],
                "ceiling": top, "share_of_ceiling": r["mfu"] / top})
  return "\n".join(lines), out


def write_into(path: pathlib.Path, text: str) -> None:
  doc = path.read_text()
  pattern = re.compile(re.escape(BEGIN) + r".*?" + re.escape(END), re.S)
  if not pattern.search(doc):
    raise SystemExit(f"{path} has no {BEGIN} ... {END} block to replace")
  path.write_text(pattern.sub(lambda _: f"{BEGIN}\n{text}\n{END}", doc))


def main(argv=None):
  args = parse(argv)
  text, out = table(measured_rows(args.results), args.device)
  print(text)
  if args.into:
    write_into(pathlib.Path(args.into), text)
  print(json.dumps({"bench": "mfu_table", "rows": out}))


if __name__ == "__main__":
  main()
