"""`sora-jax prepare SRC OUT` (sora_jax.data.prepare.prepare). Train on the result with
`--config.data.name=tfrecord:OUT`."""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
  parser.add_argument("src", metavar="SRC", help="folder of class sub-folders of videos (UCF101 layout), or a "
                      ".csv/.jsonl manifest with path[,label,caption,split]")
  parser.add_argument("out", metavar="OUT", help="output folder or URL such as gs://bucket/data (TFRecord shards + "
                      "dataset_info.json); a second run resumes")
  parser.add_argument("--fps", type=float, default=0.0, help="resample to this frame rate (0 = keep the source's)")
  parser.add_argument("--short-side", type=int, default=128, help="resize so the short side has this many pixels "
                      "(0 = keep)")
  parser.add_argument("--max-frames", type=int, default=0, help="keep at most this many frames per video (0 = all)")
  parser.add_argument("--videos-per-shard", type=int, default=16)
  parser.add_argument("--workers", type=int, default=1, help="parallel worker processes (one shard each)")
  parser.add_argument("--threads", type=int, default=0, help="decoder threads per video (0 = PyAV's choice)")
  parser.add_argument("--jpeg-quality", type=int, default=90)
  parser.add_argument("--val-fraction", type=float, default=0.0,
                      help="share of videos for 'validation' when SRC gives no split (stable hash of the path)")
  parser.add_argument("--test-fraction", type=float, default=0.2, help="share of videos for 'test' (likewise)")
  parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def run(args) -> int:
  import os
  os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
  from sora_jax import storage
  from sora_jax.data import prepare

  info = prepare.prepare(args.src, args.out, fps=args.fps, short_side=args.short_side, max_frames=args.max_frames,
                         videos_per_shard=args.videos_per_shard, workers=args.workers, threads=args.threads,
                         jpeg_quality=args.jpeg_quality, val_fraction=args.val_fraction,
                         test_fraction=args.test_fraction, progress=not args.no_progress)
  rep = info["report"]
  counts = ", ".join(f"{k} {v['num_examples']}" for k, v in info["splits"].items())
  print(f"prepared {rep['num_prepared']} of {rep['num_files']} videos into {args.out} ({counts}; "
        f"{len(info['classes'])} classes; {info['resumed_shards']} shards already done)")
  if rep["num_skipped"]:
    print(f"skipped {rep['num_skipped']} files (details in {storage.path(args.out) / prepare.REPORT_FILE}):")
    for x in rep["skipped"][:20]:
      print(f"  {x['path']}: {x['reason']}")
  if rep["num_rejected"]:
    print(f"left out {rep['num_rejected']} rows ({rep['num_duplicates']} duplicates of a file already listed; "
          f"details in {storage.path(args.out) / prepare.REPORT_FILE}):")
    for x in rep["rejected"][:20]:
      print(f"  {x['path']}: {x['reason']}")
  if rep.get("track_notes"):
    print(f"mended {len(rep['track_notes'])} thing(s) in the tracks (details in {storage.path(args.out) / prepare.REPORT_FILE}):")
    for x in rep["track_notes"][:20]:
      print(f"  {x['tracks']}: {x['note']}")
  if info.get("max_actors"):
    print(f"tracks: up to {info['max_actors']} actors per video (per-actor training: --config actors)")
  print(f"train on it with --config.data.name=tfrecord:{storage.path(args.out)}")
  return 0
