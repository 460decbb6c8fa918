"""The reference design's model in PyTorch: one definition for the benchmark (bench/model_step.py) and for
the weight-import fixture (tests/fixtures/make_reference_torch.py). PyTorch is only needed here.

    cnn  = [Conv2d 3x3 (padding 1) -> ReLU -> MaxPool2d 2] x 3   (64/128/256 channels at full width)
    rnn  = LSTM (or GRU) over time, batch_first, 2 layers, bidirectional, hidden 128
    fc   = Linear(2 * hidden, embed_dim) on one step of the RNN's output

As the design's prose intends (not as its snippet, which reshaped one image's feature map into a
time axis), the CNN runs on every frame: [B, T, H, W, 3] uint8 frames are folded into the batch,
normalised with `mean`/`std` after scaling to [0, 1], globally average-pooled, and the RNN reads the
T frame vectors. `pooling`: 'last_step' is PyTorch's `out[:, -1]` (the reference: the backward
direction's half has seen only the last frame); 'last' is each direction's final state (sora-jax's
`model.pooling=last`). The state_dict's keys are `cnn.{0,3,6}.{weight,bias}`, `rnn.weight_ih_l{k}[_reverse]`,
`rnn.weight_hh_l{k}[_reverse]`, `rnn.bias_ih_l{k}[_reverse]`, `rnn.bias_hh_l{k}[_reverse]`, `fc.{weight,bias}`.
"""

from __future__ import annotations

import torch
from torch import nn


class ReferenceModel(nn.Module):

  def __init__(self, channels=(64, 128, 256), hidden: int = 128, num_layers: int = 2, embed_dim: int = 10,
               rnn: str = "lstm", pooling: str = "last_step", mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25)):
    super().__init__()
    layers, c = [], 3
    for o in channels:
      layers += [nn.Conv2d(c, o, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2)]
      c = o
    self.cnn = nn.Sequential(*layers)
    kind = {"lstm": nn.LSTM, "gru": nn.GRU}[rnn]
    self.rnn = kind(c, hidden, num_layers=num_layers, bidirectional=True, batch_first=True)
    self.fc = nn.Linear(2 * hidden, embed_dim)
    self.hidden, self.pooling = hidden, pooling
    self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1), persistent=False)
    self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1), persistent=False)

  def forward(self, video):  # uint8 [B, T, H, W, 3] -> unit-norm [B, embed_dim]
    b, t, h, w, c = video.shape
    x = video.reshape(b * t, h, w, c).permute(0, 3, 1, 2).float() / 255.0
    x = (x - self.mean) / self.std
    f = self.cnn(x).mean(dim=(2, 3)).reshape(b, t, -1)
    s, _ = self.rnn(f)
    if self.pooling == "last_step":
      pooled = s[:, -1]
    else:
      pooled = torch.cat([s[:, -1, :self.hidden], s[:, 0, self.hidden:]], dim=-1)
    return nn.functional.normalize(self.fc(pooled), dim=-1)
