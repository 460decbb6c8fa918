"""`sora-jax embed`: embed a folder / manifest / dataset split into a searchable index directory."""

from __future__ import annotations


def add_arguments(parser) -> None:
  parser.add_argument("--workdir", required=True, help="training run whose latest checkpoint embeds the videos")
  parser.add_argument("--videos", required=True,
                      help="a folder (searched recursively; DIR/<class>/file gives labels), a manifest "
                           "(.jsonl/.csv/.tsv/.txt with paths, optional labels, captions and tracks) or dataset:NAME; a run with "
                           "per-actor features also writes one row per actor of videos with tracks to OUT/actors")
  parser.add_argument("--out", required=True, help="index directory (created, or extended with new files)")
  parser.add_argument("--batch-size", type=int, default=16, help="videos per device batch")
  parser.add_argument("--num-clips", type=int, default=None, help="clips averaged per video (default: eval.num_clips)")
  parser.add_argument("--step", type=int, default=None, help="checkpoint step (default: latest)")
  parser.add_argument("--dtype", choices=("float32", "float16"), default="float32", help="stored embedding dtype")
  parser.add_argument("--split", default=None, help="with dataset:NAME, the split (default: data.eval_split)")
  parser.add_argument("--no-progress", action="store_true", help="no progress bar")
  parser.add_argument("--flush-every", type=int, default=256, help="append the embedded rows to the index every N "
                      "videos (an interrupted run keeps what was appended)")
  parser.add_argument("--flush-seconds", type=float, default=60.0, help="... or every S seconds, whichever comes first")


def run(args) -> int:
  from sora_jax.apps.actor_rows import embed_actor_rows
  from sora_jax.apps.embed_index import embed_videos, summary
  from sora_jax.errors import DataError
  if args.batch_size < 1:
    raise DataError(f"--batch-size={args.batch_size} must be >= 1")
  if args.flush_every < 1 or not args.flush_seconds > 0:
    raise DataError(f"--flush-every={args.flush_every} must be >= 1 and --flush-seconds={args.flush_seconds} > 0")
  report = embed_videos(args.workdir, args.videos, args.out, batch_size=args.batch_size, num_clips=args.num_clips,
                        step=args.step, dtype=args.dtype, progress=not args.no_progress, split=args.split,
                        chunk=args.flush_every, flush_seconds=args.flush_seconds)
  print(summary(report))
  actors = embed_actor_rows(args.workdir, args.videos, args.out, batch_size=args.batch_size, num_clips=args.num_clips,
                            step=args.step, dtype=args.dtype, progress=not args.no_progress, split=args.split)
  if actors is not None:  # a run with per-actor features, on videos with tracks: one row per actor
    print(summary(actors).replace(" videos (", " actors (", 1))
  return 1 if report.failed and not report.index.count else 0
