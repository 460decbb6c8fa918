"""Each kernel's implementations against each other on this device (relative errors of values and
gradients; on a GPU also the Pallas GroupNorm, which Triton compiles here first, and cuDNN's attention).
bench/accelerator.py puts these in its JSON line; alone it prints them as one.

  python bench/kernel_check.py
"""

from __future__ import annotations

import json
import pathlib
import sys

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))


def check_kernels() -> dict:
  """Each kernel's implementations on this device: relative error of values and gradients between
  the masked and plain max-pool gradients, the fused, Pallas and flax GroupNorms, the depthwise
  convolutions, and (on GPU) cuDNN's and XLA's attention."""
  import jax
  import jax.numpy as jnp

  from sora_jax.models.kernels import attention_fn, depthwise_conv, forced, group_norm, max_pool2x2, max_pool3x3s2

  def rel(a, b):
    a, b = jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)
    return max(float(jnp.linalg.norm((x - y).astype(jnp.float32)) / jnp.linalg.norm(y.astype(jnp.float32)))
               for x, y in zip(a, b))

  keys = jax.random.split(jax.random.key(0), 6)
  x = jax.random.normal(keys[0], (8, 28, 28, 32), jnp.float32)
  pool = {p: jax.jit(jax.value_and_grad(lambda x, p=p: jnp.sum(jnp.tanh(max_pool2x2(x, platform=p)))))
          for p in ("cpu", "native")}
  out = {"max_pool_masked_vs_plain_rel_err": rel(pool["cpu"](x), pool["native"](x))}
  scale, bias = 1 + 0.1 * jax.random.normal(keys[1], (32,)), 0.1 * jax.random.normal(keys[5], (32,))
  xb = x.astype(jnp.bfloat16)
  depthwise_kernel = 0.2 * jax.random.normal(keys[2], (5, 5, 1, 32), jnp.float32)
  gn, by_kernel = (lambda x: group_norm(x, scale, bias, 8, relu=True)), {}
  for kernel, choices, fn in (("group_norm", ("fused", "flax"), gn),
                              ("stem_pool", ("masked", "xla"), max_pool3x3s2),
                              ("depthwise", ("taps", "xla"),
                               lambda x: depthwise_conv(x, depthwise_kernel.astype(x.dtype), 2))):
    grads = by_kernel[kernel] = {}
    for choice in choices:
      with forced(**{kernel: choice}):
        f = jax.jit(jax.value_and_grad(lambda x, fn=fn: jnp.sum(jnp.sin(fn(x).astype(jnp.float32)))))
        grads[choice] = (f(x), f(xb))
    a, b = choices
    out[f"{kernel}_{a}_vs_{b}_rel_err"] = rel(grads[a][0], grads[b][0])
    out[f"{kernel}_{a}_vs_{b}_rel_err_bf16"] = rel(grads[a][1], grads[b][1])
  try:  # on a GPU Triton compiles the Pallas GroupNorm here first (the interpreter on CPU): a failure is reported
    for choice in ("pallas", "pallas_wide"):
      with forced(group_norm=choice):
        f = jax.jit(jax.value_and_grad(lambda x: jnp.sum(jnp.sin(gn(x).astype(jnp.float32)))))
        out |= {f"group_norm_{choice}_vs_flax_rel_err{s}": rel(f(a), by_kernel["group_norm"]["flax"][i])
                for i, (s, a) in enumerate((("", x), ("_bf16", xb)))}
  except Exception as e:  # noqa: BLE001
    out["group_norm_pallas_error"] = f"{type(e).__name__}: {str(e).splitlines()[0][:200]}"
  if jax.default_backend() == "gpu":
    q, kk, v = (jax.random.normal(keys[i], (4, 16, 12, 64), jnp.bfloat16) for i in (2, 3, 4))

    def attend(impl):
      f = attention_fn(True, impl)
      return jax.jit(jax.value_and_grad(lambda q, k, v: jnp.sum(jnp.sin(f(q, k, v).astype(jnp.float32))), (0, 1, 2)))

    try:
      hlo = jax.jit(attention_fn(True, "cudnn")).lower(q, kk, v).compile().as_text()
      out["attention_cudnn_vs_xla_rel_err"] = rel(attend("cudnn")(q, kk, v), attend("xla")(q, kk, v))
      out["attention_cudnn_custom_call"] = "cudnn" in hlo.lower()
    except Exception as e:  # noqa: BLE001 - reported in the JSON line, the benchmark goes on
      out["attention_cudnn_error"] = f"{type(e).__name__}: {str(e).splitlines()[0][:200]}"
  return out


if __name__ == "__main__":
  print(json.dumps({"bench": "kernel_check", **check_kernels()}, default=str))
