"""Modules, output shapes, parameter counts and FLOPs per clip for a config.

FLOPs come from XLA's cost analysis of the jitted forward pass on one clip (B=1); per-module rows
use flax's call-stack capture (one lowering per module), the total uses the compiled whole model.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from sora_jax.models.video_encoder import build_encoder_unchecked, default_batch_shape


def _fmt_shape(tree) -> str:
  leaves = jax.tree_util.tree_leaves_with_path(tree)
  if isinstance(tree, dict):
    return " ".join(f"{jax.tree_util.keystr(p)[2:-2]}{list(x.shape)}" for p, x in leaves)
  return " ".join(str(list(x.shape)) for _, x in leaves)


def _count(tree) -> int:
  return int(sum(np.prod(x.shape) for x in jax.tree.leaves(tree)))


def _subtree(params, path):
  node = params
  for name in path:
    if not isinstance(node, dict) or name not in node:
      return {}
    node = node[name]
  return node


def xla_flops(fn, *args, compiled: bool = False) -> float | None:
  """XLA's FLOP count of `fn(*args)` (arrays or ShapeDtypeStructs), of the lowered module (or the
  compiled one); None where the backend gives none. A scan's body counts once: unroll recurrences
  to count them T times."""
  lowered = jax.jit(fn).lower(*args)
  cost = (lowered.compile() if compiled else lowered).cost_analysis()
  cost = (cost[0] if cost else {}) if isinstance(cost, (list, tuple)) else cost
  return float(cost["flops"]) if cost and "flops" in cost else None


def summary_rows(config, depth: int = 2, module_flops: bool = True):
  """Rows (path, output shapes, params incl. submodules, forward FLOPs per clip or None) and totals."""


  # Fully unrolled scans: XLA's cost analysis counts a while-loop body once, not T times.
  model = build_encoder_unchecked(config, unroll=config.data.num_frames + 1)
  clip = jnp.zeros(default_batch_shape(config, 1), jnp.uint8)
  rng = jax.random.key(0)
  variables = jax.eval_shape(lambda r: model.init(r, clip), rng)
  params = variables["params"]
  rows = []
  try:
    table = nn.summary._get_module_table(model, depth=depth, show_repeated=False,
                                         compute_flops=module_flops, compute_vjp_flops=False)(rng, clip)
    for r in table:
      if getattr(r.module_copy, "kind", None) == "none":
        continue  # identity norm layers
      flops = r.flops if module_flops and r.flops >= 0 else None
      rows.append(("/".join(r.path) or "VideoEncoder", _fmt_shape(r.outputs), _count(_subtree(params, r.path)),
                   flops))
  except Exception:  # flax-internal API moved: fall back to the top-level parameter groups
    for name, sub in params.items():
      rows.append((name, "", _count(sub), None))
  total_flops = xla_flops(lambda v, x: model.apply(v, x), variables, clip, compiled=True) or 0.0
  return rows, {"params": _count(params), "flops_per_clip": total_flops,
                "clip_shape": list(clip.shape[1:])}


def format_table(rows, totals) -> str:
  def flops_text(f):
    return "-" if f is None else f"{f / 1e6:,.1f}"

  header = ("module", "output shape", "params", "MFLOPs/clip")
  body = [(p, s, f"{n:,}", flops_text(f)) for p, s, n, f in rows]
  last = ("total", f"clip {totals['clip_shape']}", f"{totals['params']:,}",
          flops_text(totals["flops_per_clip"]))
  widths = [max(len(r[i]) for r in [header, *body, last]) for i in range(4)]

  def line(r):
    return "  ".join([r[0].ljust(widths[0]), r[1].ljust(widths[1]), r[2].rjust(widths[2]), r[3].rjust(widths[3])])

  sep = "-" * len(line(header))
  return "\n".join([line(header), sep, *map(line, body), sep, line(last)])
