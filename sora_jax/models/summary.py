"""Modules, output shapes, parameter counts and FLOPs per clip for a config.

FLOPs come from XLA's cost analysis of the jitted forward pass on one clip (B=1); per-module rows
use flax's call-stack capture (one lowering per module), the total uses the compiled whole model.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from sora_jax.models.video_encoder import default_batch_shape, build_encoder_unchecked


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
  apply = jax.jit(lambda v, x: model.apply(v, x))
  cost = apply.lower(variables, clip).compile().cost_analysis()
  if isinstance(cost, (list, tuple)):
    cost = cost[0] if cost else {}
  total_flops = float((cost or {}).get("flops", 0.0))
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
