"""`sora-jax export`: a run's encoder weights as a .safetensors file or a PyTorch state_dict (.pth)."""

from __future__ import annotations

import logging


def add_arguments(parser) -> None:
  parser.add_argument("--workdir", required=True, help="the training run (its latest checkpoint unless --step)")
  parser.add_argument("--format", choices=("safetensors", "torch"), default="safetensors",
                      help="safetensors (default) or torch (a state_dict file torch.load reads; PyTorch is not needed)")
  parser.add_argument("--out", default=None,
                      help="the file to write (default WORKDIR/export/model-STEP.safetensors|.pth)")
  parser.add_argument("--layout", choices=("auto", "reference", "flax"), default="auto",
                      help="reference: the PyTorch reference model's names and layouts (seed CNN + LSTM/GRU + linear "
                           "head); flax: every variable under its flax path; auto (default): reference when it fits")
  parser.add_argument("--step", type=int, default=None, help="the checkpoint to export (default: the latest)")


def run(args) -> int:
  from sora_jax.weights.transfer import export
  logging.basicConfig(level=logging.WARNING, format="%(message)s")
  export(args.workdir, args.format, args.out, layout=args.layout, step=args.step)
  return 0
