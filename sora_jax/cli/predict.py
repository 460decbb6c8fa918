"""`sora-jax predict`: class probabilities of one video file (classifier head, kNN over an index, or
zero-shot from class names with a run that has a text head)."""

from __future__ import annotations

import json


def add_arguments(parser) -> None:
  parser.add_argument("--workdir", required=True, help="training run whose latest checkpoint embeds the video")
  parser.add_argument("--video", required=True, help="the video file")
  parser.add_argument("--index", default=None, help="labelled index (from `sora-jax embed`): kNN vote instead of the classifier head")
  parser.add_argument("--labels", default=None, help="zero-shot: class names separated by commas (a run with a "
                      "text head, e.g. --config text)")
  parser.add_argument("--tracks", default=None, help="per actor: a JSON file with, per frame, a list of "
                      "[actor_id, x0, y0, x1, y1] in pixels (a run with model.actors, after `sora-jax eval`)")
  parser.add_argument("--template", default="a video of a {}", help="zero-shot prompt; {} is the class name")
  parser.add_argument("--k", type=int, default=20, help="neighbours in the kNN vote")
  parser.add_argument("--temperature", type=float, default=0.07, help="kNN vote weight exp((sim - 1) / T)")
  parser.add_argument("--top", type=int, default=5, help="classes shown")
  parser.add_argument("--num-clips", type=int, default=None, help="clips averaged (default: eval.num_clips)")
  parser.add_argument("--json", action="store_true", help="print one JSON line instead of a table")


def run(args) -> int:
  from sora_jax.apps.predict import predict_video
  from sora_jax.errors import DataError
  if args.k < 1 or args.temperature <= 0:
    raise DataError(f"--k={args.k} must be >= 1 and --temperature={args.temperature} > 0")
  if args.tracks is not None:
    if args.index is not None or args.labels is not None:
      raise DataError("--tracks predicts per actor with the run's per-actor classifiers; drop --index / --labels")
    return _per_actor(args)
  result = predict_video(args.workdir, args.video, index=args.index, k=args.k, temperature=args.temperature,
                         num_clips=args.num_clips, labels=args.labels, template=args.template)
  top = result["probabilities"][:max(args.top, 1)]
  if args.json:
    print(json.dumps(dict(result, probabilities=top)))
    return 0
  width = max(len(n) for n, _ in top)
  print(f"{args.video}  ({result['method']}, checkpoint step {result['step']})")
  for name, p in top:
    print(f"  {name:<{width}}  {p:.4f}")
  return 0


def _per_actor(args) -> int:
  from sora_jax.apps.actors import predict_actors
  result = predict_actors(args.workdir, args.video, args.tracks, num_clips=args.num_clips)
  top = max(args.top, 1)
  result["actors"] = [dict(a, **{k: a[k][:top] for k in ("motion", "shape") if k in a}) for a in result["actors"]]
  if args.json:
    print(json.dumps(result))
    return 0
  print(f"{args.video}  (per actor, checkpoint step {result['step']})")
  for note in result["notes"]:
    print(f"  note: {note}")
  for actor in result["actors"]:
    parts = [f"{what}: " + ", ".join(f"{n} {p:.2f}" for n, p in actor[what]) for what in ("motion", "shape") if what in actor]
    print(f"  actor {actor['id']}:  " + "   ".join(parts))
  return 0
