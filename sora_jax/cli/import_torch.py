"""`sora-jax import-torch`: a reference PyTorch state_dict (or a .safetensors export) -> checkpoint 0 of a workdir,
which eval, embed, search, predict and a resumed train read like a trained run's."""

from __future__ import annotations

import logging

TAKES_OVERRIDES = True


def add_arguments(parser) -> None:
  parser.add_argument("model", metavar="MODEL.pth", help="the reference model's state_dict (torch.save, read without "
                      "running code from it) or a .safetensors file in its layout")
  parser.add_argument("--config", default="seed", help="the run's config (default seed): data, objective, seed... are "
                      "kept; the model's sizes come from the file")
  parser.add_argument("--workdir", required=True, help="a new workdir (local path or URL)")


def run(args) -> int:
  from sora_jax.config import load_config
  from sora_jax.weights.transfer import import_torch
  logging.basicConfig(level=logging.WARNING, format="%(message)s")  # orbax/absl INFO is noise here
  import_torch(args.model, load_config(args.config, args.overrides), args.workdir)
  return 0
