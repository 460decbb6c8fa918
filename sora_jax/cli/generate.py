"""`sora-jax generate`: clips from a generator run (`--config generate`), like a video, for a
sentence, or between two videos; each written as an .mp4 and a PNG strip of its frames."""

from __future__ import annotations

import sys


def add_arguments(parser) -> None:
  parser.add_argument("--workdir", required=True, help="a generator run (sora-jax train --config generate)")
  parser.add_argument("--like", default=None, help="a video file: clips like it (conditioned on its embedding)")
  parser.add_argument("--to", default=None, help="with --like: clips along the way from --like to this video")
  parser.add_argument("--text", default=None, help="a sentence (a generator on the video-text space of a "
                      "--config text encoder, generate.condition=aligned)")
  parser.add_argument("--num", type=int, default=4, help="clips per condition")
  parser.add_argument("--steps", type=int, default=8, help="with --to: clips along the interpolation, both ends included")
  parser.add_argument("--seed", type=int, default=0, help="the noise: the same seed gives the same clips")
  parser.add_argument("--guidance", type=float, default=None, help="classifier-free guidance scale (default: "
                      "the run's generate.guidance; 1 = the condition alone)")
  parser.add_argument("--solver", default=None, help="euler | heun (second order, two network calls per step; "
                      "default: the run's generate.solver)")
  parser.add_argument("--sample-steps", type=int, default=None, help="sampling steps from noise to clip "
                      "(default: the run's generate.sample_steps)")
  parser.add_argument("--out", required=True, help="folder for NAME.mp4 and NAME.png (created; a local path or URL)")


def run(args) -> int:
  from sora_jax.apps.generate import generate_videos
  paths = generate_videos(args.workdir, out=args.out, like=args.like, to=args.to, text=args.text, num=args.num,
                          seed=args.seed, guidance=args.guidance, steps=args.steps,
                          solver=args.solver, sample_steps=args.sample_steps, progress=True)
  for p in paths:
    print(p)
  print(f"wrote {len(paths)} clips (.mp4 and .png) to {args.out}", file=sys.stderr)
  return 0
