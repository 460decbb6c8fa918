"""Where a traced step's device time goes: reads a profiler trace (`*.xplane.pb`, as `jax.profiler.trace`
and `bench/accelerator.py --profile DIR` write it) with jax's own reader, and sums the device's kernels
by kind (matmul, attention, convolution, reduction/normalisation, elementwise, copy) per traced step,
with how busy the device was over the traced span and the kernels that took longest. Prints a markdown
table, then one JSON line. Nothing but jax is needed, so it runs on the lent machine itself.

  python bench/trace_summary.py DIR [--steps 1] [--top 12]     # DIR: searched for the newest *.xplane.pb
  python bench/trace_summary.py --smoke                         # traces a tiny jitted step here, then reads it

On a GPU the kernels are the events of the device plane's stream lines (what CUPTI recorded); on a TPU
its "XLA Ops" line; on a CPU, which has no device plane, the host threads' events that name an HLO op
(there the kinds are rough: `--smoke` checks the script, not a figure).
"""

from __future__ import annotations

import argparse
import collections
import json
import pathlib
import re
import sys
import tempfile

# First match wins: a convolution's kernel is called an implicit GEMM, and a cuDNN kernel may be either.
KINDS = (
    ("attention", r"fmha|sdpa|flash|attention|softmax"),
    ("convolution", r"conv(?!ert)|fprop|dgrad|wgrad|winograd"),  # not XLA's `convert` fusions
    ("ynnpack (CPU)", r"^ynn_"),  # XLA:CPU's YNNPACK fusions: a matmul and what it fused, alike
    ("matmul", r"gemm|nvjet|xmma|cutlass|cublas|wgmma|matmul|\bdot|triton_gemm"),
    ("reduction", r"reduce|norm|welford|mean|variance"),
    ("copy", r"copy|transpose|memcpy|memset|concatenate|dynamic.update|dynamic.slice|\bpad"),
    ("elementwise", r"fusion|loop_|wrapped_|convert|add|multiply|select|exp|tanh|erf|relu|gelu"),
)
DERIVED_LINES = {"XLA Modules", "Steps", "Framework Ops", "Framework Name Scope", "Source code", "XLA TraceMe",
                 "Launch Stats", "TensorFlow Name Scope", "TensorFlow Ops", "Async XLA Ops"}


def kind_of(name: str) -> str:
  low = name.lower()
  for kind, pattern in KINDS:
    if re.search(pattern, low):
      return kind
  return "other"


def newest_trace(root: pathlib.Path) -> pathlib.Path:
  found = sorted(root.rglob("*.xplane.pb"), key=lambda p: p.stat().st_mtime)
  if not found:
    raise SystemExit(f"no *.xplane.pb under {root}: trace a step first (bench/accelerator.py --profile {root})")
  return found[-1]


def leaves(events) -> list[tuple[str, int, int]]:
  """The events of one line that hold no other (XLA:CPU nests a loop's thunks inside the loop's event;
  a GPU stream's kernels do not nest), so that no time is counted twice."""
  events = sorted(events, key=lambda x: (x[1], -x[2]))
  return [e for e, nxt in zip(events, events[1:] + [None]) if nxt is None or nxt[1] >= e[2]]


def device_events(path: pathlib.Path) -> tuple[str, list[tuple[str, int, int]]]:
  """(where, [(kernel name, start ns, end ns)]) of the first accelerator in the trace, or the CPU's ops."""
  from jax.profiler import ProfileData
  data = ProfileData.from_file(str(path))
  planes = sorted((p for p in data.planes if p.name.startswith("/device:") and "CPU" not in p.name),
                  key=lambda p: p.name)
  if planes:
    plane = planes[0]
    lines = [ln for ln in plane.lines if ln.name not in DERIVED_LINES]
    streams = [ln for ln in lines if ln.name.startswith("Stream")]
    lines = streams or [ln for ln in lines if ln.name == "XLA Ops"] or lines
    return plane.name, [e for ln in lines for e in leaves((e.name, int(e.start_ns), int(e.end_ns)) for e in ln.events)]
  host = data.find_plane_with_name("/host:CPU")
  return "/host:CPU", [e for ln in (host.lines if host else []) for e in leaves(
      (e.name, int(e.start_ns), int(e.end_ns)) for e in ln.events if "hlo_op" in dict(e.stats))]


def busy_ns(events) -> int:
  """Time covered by at least one kernel (kernels on several streams overlap)."""
  total, end = 0, None
  for _, s, e in sorted(events, key=lambda x: x[1]):
    if end is None or s > end:
      total, end = total + (e - s), e
    elif e > end:
      total, end = total + (e - end), e
  return total


def summarise(where: str, events, steps: int, top: int) -> dict:
  if not events:
    raise SystemExit(f"no kernels on {where} in the trace: was a step run inside the trace?")
  span = max(e for _, _, e in events) - min(s for _, s, _ in events)
  by_kind, by_name = collections.defaultdict(lambda: [0, 0]), collections.defaultdict(lambda: [0, 0])
  for name, s, e in events:
    for table in (by_kind[kind_of(name)], by_name[name]):
      table[0] += e - s
      table[1] += 1
  kernel_ns = sum(v[0] for v in by_kind.values())
  return {"bench": "trace_summary", "where": where, "steps": steps, "kernels_per_step": len(events) / steps,
          "span_ms_per_step": span / steps / 1e6, "kernel_ms_per_step": kernel_ns / steps / 1e6,
          "busy_fraction": busy_ns(events) / span if span else 1.0,
          "kinds": {k: {"ms_per_step": v[0] / steps / 1e6, "share": v[0] / kernel_ns, "per_step": v[1] / steps}
                    for k, v in sorted(by_kind.items(), key=lambda kv: -kv[1][0])},
          "top": [{"kernel": n, "kind": kind_of(n), "ms_per_step": v[0] / steps / 1e6, "per_step": v[1] / steps}
                  for n, v in sorted(by_name.items(), key=lambda kv: -kv[1][0])[:top]]}


def render(s: dict) -> str:
  out = [f"{s['where']}: {s['kernels_per_step']:.0f} kernels per step, {s['kernel_ms_per_step']:.2f} ms of kernels in a "
         f"{s['span_ms_per_step']:.2f} ms span, the device busy {s['busy_fraction']:.0%} of it", "",
         "| kind | ms per step | share of kernel time | kernels per step |", "|---|--:|--:|--:|"]
  out += [f"| {k} | {v['ms_per_step']:.2f} | {v['share']:.1%} | {v['per_step']:.0f} |" for k, v in s["kinds"].items()]
  out += ["", "| longest kernels | kind | ms per step | launches per step |", "|---|---|--:|--:|"]
  out += [f"| `{t['kernel'][:90]}` | {t['kind']} | {t['ms_per_step']:.3f} | {t['per_step']:.0f} |" for t in s["top"]]
  return "\n".join(out)


def smoke_trace(root: pathlib.Path, steps: int) -> None:
  import jax
  import jax.numpy as jnp
  step = jax.jit(lambda w, x: jnp.tanh(x @ w).sum(axis=0) + jax.nn.softmax(x, axis=-1).mean())
  w, x = jnp.ones((128, 128)), jnp.ones((256, 128))
  step(w, x).block_until_ready()
  with jax.profiler.trace(str(root)):
    for _ in range(steps):
      step(w, x).block_until_ready()


def main(argv=None) -> dict:
  ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  ap.add_argument("trace_dir", nargs="?", help="a directory holding the trace (searched for the newest *.xplane.pb)")
  ap.add_argument("--steps", type=int, default=1, help="steps the trace holds (figures are per step)")
  ap.add_argument("--top", type=int, default=12)
  ap.add_argument("--smoke", action="store_true", help="trace a tiny step on this machine, then summarise it")
  args = ap.parse_args(argv)
  if args.steps < 1:
    ap.error("--steps must be at least 1")
  if args.smoke:
    args.trace_dir = tempfile.mkdtemp(prefix="trace_summary_")
    smoke_trace(pathlib.Path(args.trace_dir), args.steps)
  if not args.trace_dir:
    ap.error("give the trace directory, or --smoke")
  summary = summarise(*device_events(newest_trace(pathlib.Path(args.trace_dir))), args.steps, args.top)
  print(render(summary))
  print(json.dumps(summary))
  return summary


if __name__ == "__main__":
  main(sys.argv[1:])
