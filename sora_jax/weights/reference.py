"""The reference design's PyTorch model <-> sora-jax's seed architecture: names, layouts, sizes.

The reference (bench/torch_reference.py) is `cnn` = 3x [Conv2d 3x3 pad 1, ReLU, MaxPool2d 2] at
indices 0/3/6, `rnn` = an LSTM or GRU (batch_first, `num_layers`, optionally bidirectional) and `fc`
on the RNN's output at the last step. Here it is `model.frame_encoder=seed_cnn` (frame_input rgb,
norm none, global mean pool), `model.temporal=lstm|gru`, `model.pooling=last_step` and a one-layer
projection head. The layouts:
- conv `weight` [O, I, 3, 3] -> `kernel` [3, 3, I, O] (both cross-correlate; padding 1 = SAME);
- RNN `weight_ih_l{k}` [G*H, F] -> `layer{k}_fwd/input/kernel` [F, G*H], `weight_hh_l{k}` -> `cell/hidden/kernel`
  (`_reverse` -> `layer{k}_bwd`); the gate order is PyTorch's in both (LSTM i, f, g, o; GRU r, z, n);
  the LSTM's two biases are summed into `input/bias` (export writes `bias_hh` = 0); the GRU keeps
  `bias_hh` as `cell/hidden/bias` (its reset gate multiplies the hidden term with its bias);
- `fc.weight` [E, D] -> `projection/dense0/kernel` [D, E].
"""

from __future__ import annotations

import dataclasses
import re

import numpy as np

from sora_jax.errors import CheckpointError

_CONV_INDEX = 3  # conv, ReLU, pool: the convolutions sit at cnn.0, cnn.3, cnn.6
_BASE_CHANNELS = (64, 128, 256)  # SeedCNN at width 1.0


@dataclasses.dataclass(frozen=True)
class Architecture:
  width: float
  rnn: str  # 'lstm' | 'gru'
  hidden: int
  num_layers: int
  bidirectional: bool
  embed_dim: int

  def __str__(self) -> str:
    return (f"seed CNN {'/'.join(map(str, self.channels))}, {'bidirectional ' if self.bidirectional else ''}"
            f"{self.num_layers}-layer {self.rnn.upper()} {self.hidden}, embedding {self.embed_dim}")

  @property
  def channels(self) -> tuple[int, ...]:
    return tuple(max(1, int(round(c * self.width))) for c in _BASE_CHANNELS)

  @property
  def gates(self) -> int:
    return 4 if self.rnn == "lstm" else 3

  def directions(self):
    return (("", "fwd"), ("_reverse", "bwd")) if self.bidirectional else (("", "fwd"),)

  def config_fields(self) -> dict:
    """The config.model fields that make sora-jax's model this architecture."""
    return {"frame_encoder": "seed_cnn", "pretrained": False, "frame_input": "rgb", "norm": "none",
            "frame_pool": "mean", "width": self.width, "temporal": self.rnn, "hidden_size": self.hidden,
            "num_layers": self.num_layers, "bidirectional": self.bidirectional, "pooling": "last_step",
            "head_layers": 1, "embed_dim": self.embed_dim}


def _shape(sd, key, where):
  if key not in sd:
    raise CheckpointError(f"{where} has no {key!r}: not the reference model (cnn.0/3/6, rnn, fc); keys: "
                          f"{', '.join(sorted(sd)[:10])}{' ...' if len(sd) > 10 else ''}")
  return sd[key].shape


def infer(sd: dict, where: str) -> Architecture:
  """The reference architecture a state_dict holds (from its keys and shapes)."""
  c0 = _shape(sd, "cnn.0.weight", where)
  hidden = _shape(sd, "rnn.weight_hh_l0", where)[1]
  gates = _shape(sd, "rnn.weight_ih_l0", where)[0] // max(hidden, 1)
  if gates not in (3, 4):
    raise CheckpointError(f"{where}: rnn.weight_ih_l0 has {sd['rnn.weight_ih_l0'].shape[0]} rows for hidden size "
                          f"{hidden}: neither an LSTM (4 x hidden) nor a GRU (3 x hidden)")
  layers = len([k for k in sd if re.fullmatch(r"rnn\.weight_ih_l\d+", k)])
  return Architecture(width=c0[0] / _BASE_CHANNELS[0], rnn="lstm" if gates == 4 else "gru", hidden=hidden,
                      num_layers=layers, bidirectional="rnn.weight_ih_l0_reverse" in sd,
                      embed_dim=_shape(sd, "fc.weight", where)[0])


def of_config(m) -> Architecture:
  """The reference architecture of a config.model; CheckpointError naming the first field that is not."""
  arch = Architecture(width=m.width, rnn=m.temporal, hidden=m.hidden_size, num_layers=m.num_layers,
                      bidirectional=m.bidirectional, embed_dim=m.embed_dim)
  need = dict(arch.config_fields(), pooling=m.pooling if m.pooling in ("last", "last_step") else "last_step")
  for field, value in need.items():
    if m[field] != value:
      raise CheckpointError(f"this run's model has model.{field}={m[field]!r}; the reference model's layout needs "
                            f"{value!r} (the seed CNN on RGB frames, an LSTM/GRU, a linear head): export it with "
                            "--layout flax")
  return arch


def expected_shapes(arch: Architecture) -> dict[str, tuple[int, ...]]:
  """Every key of the reference state_dict with its shape."""
  shapes, cin = {}, 3
  for i, c in enumerate(arch.channels):
    shapes[f"cnn.{i * _CONV_INDEX}.weight"], shapes[f"cnn.{i * _CONV_INDEX}.bias"] = (c, cin, 3, 3), (c,)
    cin = c
  g, h, d = arch.gates * arch.hidden, arch.hidden, len(arch.directions())
  for k in range(arch.num_layers):
    for suffix, _ in arch.directions():
      shapes.update({f"rnn.weight_ih_l{k}{suffix}": (g, cin if k == 0 else d * h),
                     f"rnn.weight_hh_l{k}{suffix}": (g, h), f"rnn.bias_ih_l{k}{suffix}": (g,),
                     f"rnn.bias_hh_l{k}{suffix}": (g,)})
  shapes["fc.weight"], shapes["fc.bias"] = (arch.embed_dim, d * h), (arch.embed_dim,)
  return shapes


def check(sd: dict, arch: Architecture, where: str) -> None:
  """One CheckpointError listing the missing, extra and mis-shaped keys (and a width that is not one)."""
  expected = expected_shapes(arch)
  missing = [k for k in expected if k not in sd]
  extra = sorted(k for k in sd if k not in expected)
  shaped = [f"{k} {tuple(sd[k].shape)} (expected {v})" for k, v in expected.items()
            if k in sd and tuple(sd[k].shape) != v]
  problems = [f"{name}: {', '.join(keys)}" for name, keys in
              (("missing", missing), ("unexpected", extra), ("mis-shaped", shaped)) if keys]
  if problems:
    raise CheckpointError(f"{where} does not fit the reference model {arch}: {'; '.join(problems)}")


def to_params(sd: dict, arch: Architecture) -> dict:
  """Reference state_dict -> sora-jax parameters {'frame_encoder', 'temporal', 'projection'} (float32)."""
  f = {k: np.asarray(v, np.float32) for k, v in sd.items()}
  frame = {f"conv{i}": {"kernel": f[f"cnn.{i * _CONV_INDEX}.weight"].transpose(2, 3, 1, 0),
                        "bias": f[f"cnn.{i * _CONV_INDEX}.bias"]} for i in range(len(arch.channels))}
  rnn = {}
  for k in range(arch.num_layers):
    for suffix, side in arch.directions():
      b_ih, b_hh = f[f"rnn.bias_ih_l{k}{suffix}"], f[f"rnn.bias_hh_l{k}{suffix}"]
      hidden = {"kernel": f[f"rnn.weight_hh_l{k}{suffix}"].T}
      if arch.rnn == "lstm":  # both biases add to the gates: one is enough (b_ih alone when b_hh is 0: bitwise)
        bias = b_ih + b_hh if b_hh.any() else b_ih
      else:
        bias, hidden["bias"] = b_ih, b_hh
      rnn[f"layer{k}_{side}"] = {"input": {"kernel": f[f"rnn.weight_ih_l{k}{suffix}"].T, "bias": bias},
                                 "cell": {"hidden": hidden}}
  head = {"dense0": {"kernel": f["fc.weight"].T, "bias": f["fc.bias"]}}
  return {"frame_encoder": frame, "temporal": {"rnn": rnn}, "projection": head}


def to_state_dict(params, arch: Architecture) -> dict[str, np.ndarray]:
  """sora-jax parameters of the reference architecture -> the reference state_dict (C-ordered float32)."""
  p = lambda *keys: _get(params, keys)  # noqa: E731
  sd = {}
  for i in range(len(arch.channels)):
    sd[f"cnn.{i * _CONV_INDEX}.weight"] = p("frame_encoder", f"conv{i}", "kernel").transpose(3, 2, 0, 1)
    sd[f"cnn.{i * _CONV_INDEX}.bias"] = p("frame_encoder", f"conv{i}", "bias")
  for k in range(arch.num_layers):
    for suffix, side in arch.directions():
      layer = ("temporal", "rnn", f"layer{k}_{side}")
      sd[f"rnn.weight_ih_l{k}{suffix}"] = p(*layer, "input", "kernel").T
      sd[f"rnn.weight_hh_l{k}{suffix}"] = p(*layer, "cell", "hidden", "kernel").T
      sd[f"rnn.bias_ih_l{k}{suffix}"] = p(*layer, "input", "bias")
      sd[f"rnn.bias_hh_l{k}{suffix}"] = (p(*layer, "cell", "hidden", "bias") if arch.rnn == "gru"
                                         else np.zeros(arch.gates * arch.hidden, np.float32))
  sd["fc.weight"], sd["fc.bias"] = p("projection", "dense0", "kernel").T, p("projection", "dense0", "bias")
  return {k: np.ascontiguousarray(v, np.float32) for k, v in sd.items()}


def _get(tree, keys):
  for k in keys:
    tree = tree[k]
  return np.asarray(tree)
