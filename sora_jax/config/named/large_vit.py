"""configs/large.py with a ViT-B/16 on every frame instead of ResNet-34: the frame encoder made for
accelerators (nearly all of its work is dense layers and attention; bench/roofline.py gives its
ceiling beside the ResNet's). Same data (16 frames of 224 px, two views), temporal Transformer,
heads and objective; 196 patches mean-pooled (an even token count, so cuDNN's fused attention takes
it on NVIDIA GPUs; a CLS token would make 197); AdamW as ViTs train (MoCo v3's 1.5e-4 x batch / 256,
weight decay 0.1, 40 warm-up epochs of Kinetics-400 at this batch ~ 10k steps).

Each ViT block is recomputed in the backward pass (remat_frames=block). Measured on one H200
(bench/results/h200_2026-12-04_mfu*): without remat, 8 clips per device took 39.1 GB and ran at 73.3
clips/s (25.0% MFU) and 32 did not fit; with it, 32 clips take 13.8 GB and run at 93.7 clips/s (31.9%),
and 128 at 94.1 (32.0%): flat in the batch, and faster than 8 clips without it (8 clips with it were
not measured). --config.model.remat_policy=dots keeps each block's dense-layer outputs (only LayerNorm,
attention and GELU recomputed): roofline ceiling 61.8% on an H100 against 52.8%, 0.90x the step time on
CPU; not the default until a GPU has measured its speed and memory (docs/benchmarks.md).
"""

from sora_jax.config.named import large


def get_config():
  c = large.get_config()
  c.model.frame_encoder = "vit"
  c.model.vit_size = "B"
  c.model.vit_depth = 0  # the size's 12
  c.model.vit_patch = 16
  c.model.frame_pool = "mean"
  c.model.remat_frames = "block"
  c.model.scan_layers = True  # one compiled block per stack: compile time flat in depth

  c.optimizer.name = "adamw"
  c.optimizer.learning_rate = 1.5e-4 * c.train.batch_size / 256
  c.optimizer.warmup_steps = 10_000
  c.optimizer.weight_decay = 0.1
  c.optimizer.clip_norm = 1.0
  return c
