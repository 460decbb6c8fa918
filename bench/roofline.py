"""Roofline of a config's training step: the fastest each layer could run on a device, and the MFU
that allows. Nothing runs on a device: the model is traced abstractly (no FLOPs spent), each
convolution, dense layer, GroupNorm and the stem max-pool is recorded with its shapes, and each of
their kernels (forward; input and filter gradients) is given `max(FLOPs / peak, bytes / bandwidth)`.
A layer the config recomputes in the backward pass (`remat_frames`, `model.remat`, `remat_policy`)
runs its forward kernels again: time, not model FLOPs.
The sum is a lower bound on a step that runs its kernels one after another (XLA:GPU's one stream)
and moves every tensor through HBM once per kernel that reads or writes it: no kernel can be faster,
and anything not modelled (attention, the optimizer, the loss, casts) only adds time. So every MFU
printed here is a ceiling.

GroupNorm (and BatchNorm) is counted at the fewest passes XLA can run it in, whatever kernel does
it (statistics cannot ride in a convolution's epilogue): forward one read of x for the statistics,
then read x (+ residual) and write y; backward one read of dy and x (+ residual, for the ReLU's
mask) for the per-channel sums, then read them again and write dx (+ the residual's gradient). With
a residual that is 12 element-passes, without one 8. `--group-norm one-read` counts the Pallas
kernels (models/group_norm_pallas.py, one group a program) instead: a group that fits one tile is
read once each way (forward: x (+ residual) in, y out; backward: x, dy (+ residual) in, dx (+ its
gradient) out: 8 or 5 passes); a larger one (the stem of a 224 px ResNet) at XLA's passes. Without
a normaliser, the ReLU and residual add are taken to ride in the convolution (XLA:GPU's fused cuDNN
call) and the ReLU's gradient costs 3 passes.

  python bench/roofline.py                      # configs/large.py, 32 clips per device, H100
  python bench/roofline.py --conv-ms 46         # the convolutions as an H100 trace measured them (docs/benchmarks.md)
  python bench/roofline.py --set model.norm=none --device H200

--conv-ms (the convolutions' kernel time in a profile of the same step) replaces the convolutions'
roofline with what they took, and the table shows what MFU is then left. Prints a table, then one
JSON line.
"""

from __future__ import annotations

import argparse
import json
import math
import pathlib
import re
import sys
from collections import defaultdict

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

import accelerator  # noqa: E402  (its PEAK_TFLOPS: dense bf16 per chip)

from sora_jax.models import group_norm_pallas  # noqa: E402
from sora_jax.models.layers import _groups  # noqa: E402

# HBM bandwidth in TB/s per chip (vendor datasheets); peaks from bench/accelerator.py.
HBM_TB_PER_S = {"H100": 3.35, "H200": 4.8, "A100": 2.039, "L4": 0.3, "v4": 1.2, "v5e": 0.819, "v5p": 2.765,
                "v6e": 1.64}


MATMULS = ("conv", "dense", "attention")  # the layers whose FLOPs are the model's (the rest move bytes)


def parse(argv=None):
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--config", default="large")
  p.add_argument("--per-device-batch", type=int, default=32, help="clips per device")
  p.add_argument("--device", default="H100", choices=sorted(HBM_TB_PER_S))
  p.add_argument("--conv-ms", type=float, default=None, help="measured convolution kernel time per step")
  p.add_argument("--target", type=float, default=0.40, help="MFU to find the convolution efficiency for")
  p.add_argument("--set", action="append", default=[], help="section.field=value config overrides")
  p.add_argument("--group-norm", default="xla", choices=("xla", "one-read"),
                 help="GroupNorm's kernels: XLA's fewest passes, or the Pallas kernels' one read each way")
  return p.parse_args(argv)


def record_layers(config, clips: int) -> list[dict]:
  """Every convolution, dense layer, GroupNorm and stem max-pool one forward pass of `clips` clips
  (x num_views) runs, with shapes and element sizes, from an abstract trace."""
  import flax.linen as nn
  import jax
  import jax.numpy as jnp

  from sora_jax.models import build_encoder_unchecked, frame_encoders, nf_resnet, temporal
  m = config.model
  remat = (m.remat_frames, m.remat and m.temporal == "transformer", m.remat_policy)
  config = config.copy_and_resolve_references()  # traced unrolled, without remat: each layer once, then
  config.model.remat, config.model.remat_frames, config.model.scan_layers = False, "none", False  # marked
  c = config.data
  video = jax.ShapeDtypeStruct((clips * c.num_views, c.num_frames, c.frame_size, c.frame_size, 3), jnp.uint8)
  model = build_encoder_unchecked(config)
  layers: list[dict] = []

  def stage(path) -> str:
    part = next((p for p in path if p.startswith(("stage", "stem"))), None)
    if part is not None:
      return part.split("_block")[0].split("_norm")[0]
    return "frames" if path and path[0] == "frame_encoder" else "temporal+heads"

  def interceptor(next_fun, args, kwargs, context):
    out = next_fun(*args, **kwargs)
    m, path = context.module, tuple(context.module.path)
    if context.method_name != "__call__" or not hasattr(args[0], "dtype"):
      return out
    before = len(layers)
    x = args[0]
    size = jnp.dtype(x.dtype).itemsize
    if isinstance(m, (nn.Conv, frame_encoders.Conv3x3, nf_resnet.WSConv)):
      if getattr(m, "padding", "SAME") != "SAME":
        raise ValueError(f"{'/'.join(path)}: padding {m.padding!r}; only SAME convolutions are counted")
      k, strides = (m.kernel_size, m.strides or 1) if hasattr(m, "kernel_size") else ((3, 3), 1)
      strides = (strides,) * 2 if isinstance(strides, int) else tuple(strides)
      taps = math.prod(_valid_taps(n, kk, st) for n, kk, st in zip(x.shape[1:3], k, strides))
      layers.append({"kind": "conv", "stage": stage(path), "in": x.shape, "out": out.shape, "k": tuple(k),
                     "taps": taps, "bytes": size, "data_input": not any(e["kind"] == "conv" for e in layers)})
    elif isinstance(m, (nn.Dense, nn.DenseGeneral)):
      axes = (-1,) if isinstance(m, nn.Dense) else (m.axis if isinstance(m.axis, tuple) else (m.axis,))
      layers.append({"kind": "dense", "stage": stage(path), "in": x.shape, "out": out.shape, "bytes": size,
                     "contract": math.prod(x.shape[a] for a in axes)})
    elif isinstance(m, temporal.TransformerBlock):  # attention's kernel, the MLP's GELU, two residual adds
      n, length, width = x.shape
      layers.append({"kind": "attention", "stage": stage(path), "in": x.shape, "bytes": size, "heads": m.num_heads})
      layers.append({"kind": "gelu", "stage": stage(path), "in": (n, length, 4 * width), "bytes": size})
      layers.append({"kind": "residual", "stage": stage(path), "in": x.shape, "bytes": size})
      layers.append({"kind": "residual", "stage": stage(path), "in": x.shape, "bytes": size})
    elif isinstance(m, nn.LayerNorm):
      layers.append({"kind": "layer_norm", "stage": stage(path), "in": x.shape, "bytes": size})
    elif isinstance(m, frame_encoders.Norm):
      layers.append({"kind": f"{m.kind}_norm" if m.kind in ("group", "batch") else "relu+residual",
                     "stage": stage(path), "in": x.shape, "bytes": size,
                     "residual": kwargs.get("residual") is not None, "relu": kwargs.get("relu", False)})
      if path[-1] == "stem_norm" and config.model.resnet_stem == "imagenet":
        layers.append({"kind": "stem_pool", "stage": "stem", "in": out.shape, "bytes": size})
    for layer in layers[before:]:
      layer["recompute"] = recomputed(path, layer["kind"], *remat)
    return out

  with nn.intercept_methods(interceptor):
    jax.eval_shape(lambda v: model.init({"params": jax.random.key(0), "dropout": jax.random.key(1)}, v,
                                        train=True), video)
  return layers


def recomputed(path, kind: str, remat_frames: str, temporal_remat: bool, policy: str) -> str | None:
  """What the backward pass runs again of a layer at `path`: 'forward', 'standalone' (a GELU whose matmul
  output was kept: one elementwise pass of its own) or None. remat_frames='time' recomputes the whole
  frame encoder; 'block' (and model.remat, the temporal Transformer's) each ResNet or Transformer block,
  keeping its dense layers' outputs with remat_policy='dots'."""
  in_frames = bool(path) and path[0] == "frame_encoder"
  if in_frames and remat_frames == "time":
    return "forward"
  in_block = any(re.fullmatch(r"stage\d+_block\d+", p) for p in path) or (
      "transformer" in path and any(re.fullmatch(r"layer\d+", p) for p in path))
  if not in_block or not ((in_frames and remat_frames == "block") or (not in_frames and temporal_remat)):
    return None
  if policy == "dots" and kind in ("dense", "gelu"):
    return "standalone" if kind == "gelu" else None
  return "forward"


def _valid_taps(n: int, k: int, stride: int) -> int:
  """Kernel taps over one axis of a SAME-padded convolution that land inside the input, summed over
  its outputs: the multiply-adds XLA's cost analysis counts (a padded zero is not counted)."""
  m = -(-n // stride)
  low = max((m - 1) * stride + k - n, 0) // 2
  return sum(min(n, o * stride - low + k) - max(0, o * stride - low) for o in range(m))


FORWARD_KERNELS = ("forward", "statistics", "normalise")


def one_read(layers: list[dict]) -> list[dict]:
  """The GroupNorms whose groups fit one Pallas tile marked to be counted at one read each way."""
  for layer in layers:
    if layer["kind"] == "group_norm":
      c = layer["in"][-1]
      layer["one_read"] = group_norm_pallas._tiling(math.prod(layer["in"][1:-1]), c // _groups(c))[2] == 1
  return layers


def kernels_of(layer: dict) -> list[tuple[str, float, float]]:
  """[(kernel, FLOPs, HBM bytes)] of one layer's forward and backward kernels, and the forward ones
  again ('remat ...': time, not the model's FLOPs) where the backward pass recomputes them."""
  out = _kernels(layer)
  if layer.get("recompute") == "standalone":  # a GELU from its kept input: read it, write the activation
    return out + [("remat forward", 0.0, 2 * math.prod(layer["in"]) * layer["bytes"])]
  if layer.get("recompute"):
    out += [("remat " + name, f, b) for name, f, b in out if name in FORWARD_KERNELS]
  return out


def _kernels(layer: dict) -> list[tuple[str, float, float]]:
  b, kind = layer["bytes"], layer["kind"]
  if kind in ("conv", "dense"):
    x, y = math.prod(layer["in"]), math.prod(layer["out"])
    if kind == "conv":
      cin, cout = layer["in"][-1], layer["out"][-1]
      w = math.prod(layer["k"]) * cin * cout
      flops = 2.0 * layer["in"][0] * layer["taps"] * cin * cout
    else:  # rows x contract @ contract x features
      rows = x // layer["contract"]
      w = layer["contract"] * (y // rows)
      flops = 2.0 * rows * w
    out = [("forward", flops, (x + w + y) * b), ("filter gradient", flops, (x + y + w) * b)]
    if not layer.get("data_input"):
      out.append(("input gradient", flops, (y + w + x) * b))
    return out
  n = math.prod(layer["in"])
  if kind in ("group_norm", "batch_norm"):
    r = 1 if layer["residual"] else 0
    if layer.get("one_read"):
      return [("forward", 6.0 * n, (2 + r) * n * b), ("gradient", 10.0 * n, (3 + 2 * r) * n * b)]
    return [("statistics", 2.0 * n, n * b), ("normalise", 4.0 * n, (2 + r) * n * b),
            ("gradient sums", 4.0 * n, (2 + r) * n * b), ("gradient", 6.0 * n, (3 + 2 * r) * n * b)]
  if kind == "attention":  # a fused (flash) kernel: scores and probabilities never leave the chip
    n, length, width = layer["in"]
    flops = 4.0 * n * length * length * width  # Q K^T and P V over all heads (a causal mask not skipped)
    io = n * length * width * b
    return [("forward", flops, 4 * io), ("gradient", 2 * flops, 8 * io),  # reads q k v o dO, writes dq dk dv
            ("recompute", flops / 2, 0.0)]  # the backward kernel's Q K^T again: time, not the model's FLOPs
  if kind == "layer_norm":  # statistics per row stay on chip: forward reads x, writes y; backward reads dy, x, writes dx
    return [("forward", 8.0 * n, 2 * n * b), ("gradient", 10.0 * n, 3 * n * b)]
  if kind == "gelu":  # forward in the matmul's epilogue, which also writes its input for the backward (cuBLASLt's
    return [("forward", 0.0, n * b), ("gradient", 0.0, 3 * n * b)]  # GELU_AUX); backward reads dy, x, writes dx
  if kind == "residual":  # forward: the matmul reads x as its addend (beta = 1); backward: dy of both branches summed
    return [("forward", 0.0, n * b), ("gradient", 0.0, 3 * n * b)]
  if kind == "relu+residual":  # forward in the convolution's epilogue (XLA:GPU fuses it into cuDNN's call);
    return [("relu gradient", 0.0, 3 * n * b)] if layer["relu"] else []  # backward: read dy and y, write dx
  if kind == "stem_pool":  # 3x3 stride 2: forward reads x, writes a quarter; gradient reads x and dy, writes dx
    return [("forward", 9.0 * n / 4, 1.25 * n * b), ("gradient", 9.0 * n / 4, 2.25 * n * b)]
  raise ValueError(kind)


def roofline(layers: list[dict], peak: float, bandwidth: float) -> dict:
  """Per layer kind and stage: FLOPs, bytes and the roofline time (seconds)."""
  table: dict = defaultdict(lambda: {"flops": 0.0, "bytes": 0.0, "seconds": 0.0, "compute_bound_s": 0.0})
  for layer in layers:
    for name, flops, nbytes in kernels_of(layer):
      row = table[(layer["kind"], layer["stage"])]
      t = max(flops / peak, nbytes / bandwidth)
      row["flops"] += 0.0 if name == "recompute" or name.startswith("remat ") else flops
      row["bytes"] += nbytes
      row["seconds"] += t
      row["compute_bound_s"] += t if flops / peak >= nbytes / bandwidth else 0.0
  return dict(table)


def ceilings(table: dict, peak: float, conv_ms: float | None, target: float, flops: float | None = None) -> dict:
  """MFU ceilings: every kernel at its roofline; convolutions at `conv_ms`; and the convolutions'
  share of peak (while they run) that `target` needs with everything else at its roofline. `flops`
  is MFU's numerator (default: the recorded layers' FLOPs)."""
  recorded = sum(r["flops"] for (kind, _), r in table.items() if kind in MATMULS)
  flops = recorded if flops is None else flops
  conv_flops = sum(r["flops"] for (kind, _), r in table.items() if kind == "conv")
  conv_s = sum(r["seconds"] for (kind, _), r in table.items() if kind == "conv")
  rest_s = sum(r["seconds"] for (kind, _), r in table.items() if kind != "conv")
  out = {"model_flops": flops, "recorded_flops": recorded, "conv_roofline_ms": conv_s * 1e3, "rest_roofline_ms": rest_s * 1e3,
         "mfu_all_at_roofline": flops / peak / (conv_s + rest_s)}
  if conv_ms is not None:
    out["mfu_with_measured_convs"] = flops / peak / (conv_ms / 1e3 + rest_s)
    out["measured_conv_share_of_peak"] = conv_flops / peak / (conv_ms / 1e3)
  budget = flops / peak / target - rest_s  # seconds the convolutions may take
  out["conv_share_of_peak_needed"] = conv_flops / peak / budget if budget > 0 else float("inf")
  # the same for all the matmul-like kernels (convolutions, dense layers, attention) against the rest
  mm_s = sum(r["seconds"] for (kind, _), r in table.items() if kind in MATMULS)
  other_s = conv_s + rest_s - mm_s
  out.update({"matmul_roofline_ms": mm_s * 1e3, "other_roofline_ms": other_s * 1e3})
  budget = flops / peak / target - other_s
  out["matmul_share_of_peak_needed"] = recorded / peak / budget if budget > 0 else float("inf")
  return out


def xla_flops(config) -> float:
  """XLA's cost analysis of the whole training step (bench/accelerator.py's model FLOPs)."""
  import jax

  from sora_jax.parallel.mesh import make_mesh
  from sora_jax.training.step import abstract_batch, build_step
  built = build_step(config, make_mesh(config, devices=jax.devices("cpu")[:1]))  # jitted, never compiled here
  batch = abstract_batch(config, config.train.batch_size)  # with data.augment.on=device, its draws: model_flops
  return accelerator.model_flops(config, built.tx, built.abstract, batch)  # leaves the colour ops uncounted


def main(argv=None):
  args = parse(argv)
  from sora_jax.config import load_config
  config = load_config(args.config, args.set + [f"train.batch_size={args.per_device_batch}",
                                                "train.grad_accum_steps=1", "mesh.data=1", "mesh.fsdp=1"])
  peak, bandwidth = dict(accelerator.PEAK_TFLOPS)[args.device] * 1e12, HBM_TB_PER_S[args.device] * 1e12
  layers = record_layers(config, args.per_device_batch)
  table = roofline(one_read(layers) if args.group_norm == "one-read" else layers, peak, bandwidth)
  result = ceilings(table, peak, args.conv_ms, args.target, flops=xla_flops(config))
  print(f"{args.config}, {args.per_device_batch} clips x {config.data.num_views} views x "
        f"{config.data.num_frames} frames of {config.data.frame_size} px on one {args.device} "
        f"({peak / 1e12:.0f} TFLOP/s, {bandwidth / 1e12:.2f} TB/s); forward + gradients, kernels one after another; "
        f"GroupNorm {'at one read each way (Pallas)' if args.group_norm == 'one-read' else 'at XLA passes'}")
  print(f"{'layers':<30}{'GFLOP':>10}{'GB moved':>10}{'roofline ms':>13}{'compute-bound':>15}")
  for (kind, stage), r in sorted(table.items(), key=lambda kv: (kv[0][0] != "conv", kv[0])):
    share = r["compute_bound_s"] / r["seconds"] if r["seconds"] else 0.0
    print(f"{kind + ' ' + stage:<30}{r['flops'] / 1e9:>10,.0f}{r['bytes'] / 1e9:>10.2f}"
          f"{r['seconds'] * 1e3:>13.2f}{share:>14.0%}")
  has_conv = any(kind == "conv" for kind, _ in table)
  total_ms = result["conv_roofline_ms"] + result["rest_roofline_ms"]
  print((f"convolutions at their roofline {result['conv_roofline_ms']:.1f} ms; everything else "
         f"{result['rest_roofline_ms']:.1f} ms" if has_conv else f"every kernel at its roofline {total_ms:.1f} ms") +
        f"; XLA's cost analysis of the step (MFU's numerator) "
        f"{result['model_flops'] / 1e12:.2f} TFLOP, {result['recorded_flops'] / result['model_flops']:.1%} of it in the "
        "layers above")
  print(f"MFU ceiling, every kernel at its roofline: {result['mfu_all_at_roofline']:.1%}")
  if args.conv_ms is not None:
    print(f"MFU ceiling with the convolutions at the measured {args.conv_ms:g} ms "
          f"({result['measured_conv_share_of_peak']:.0%} of peak while they run): {result['mfu_with_measured_convs']:.1%}")
  if has_conv:
    print(f"MFU {args.target:.0%} needs the convolutions at {result['conv_share_of_peak_needed']:.0%} of peak "
          "while they run, with everything else at its roofline")
  print(f"MFU {args.target:.0%} needs the matmul-like kernels (convolutions, dense layers, attention: "
        f"{result['matmul_roofline_ms']:.1f} ms at their roofline) at {result['matmul_share_of_peak_needed']:.0%} of "
        f"peak while they run, with the rest ({result['other_roofline_ms']:.1f} ms) at its roofline")
  print(json.dumps({"bench": "roofline", "config": args.config, "clips_per_device": args.per_device_batch,
                    "device": args.device, "peak_flops": peak, "bandwidth_bytes_per_s": bandwidth,
                    "conv_ms": args.conv_ms, "target": args.target, "group_norm": args.group_norm,
                    **{k: round(v, 4) if isinstance(v, float) else v for k, v in result.items()}}))


if __name__ == "__main__":
  main()
