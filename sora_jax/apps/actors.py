"""Who does what in one video file: per actor (a track of boxes), the top actions and shapes.

The run must have per-actor features (model.actors) and its per-actor classifiers, which `sora-jax
eval` fits on the labelled training split and writes to W/eval/actor_classifier.npz. The video is
decoded and cut into clips as evaluation does; each actor's boxes follow the resize and the crop
(`data.tracks`), so an actor's features are those `eval` computed for the dataset's videos.
"""

from __future__ import annotations

import numpy as np

from sora_jax import storage
from sora_jax.apps.actor_rows import embed_tracks
from sora_jax.apps.embed_index import get_embedder
from sora_jax.errors import CheckpointError
from sora_jax.evaluation.actors import CLASSIFIER_FILE
from sora_jax.linalg import l2_normalize


def load_classifier(workdir) -> dict:
  """W/eval/actor_classifier.npz as arrays (read without pickle: nothing in it runs)."""
  path = storage.path(workdir) / "eval" / CLASSIFIER_FILE
  if not path.is_file():
    raise CheckpointError(f"{str(path)!r} does not exist; run `sora-jax eval --workdir {workdir}` first (it fits "
                          "the per-actor classifiers on the labelled training split)")
  with path.open("rb") as f:
    data = np.load(f, allow_pickle=False)
    return {k: data[k] for k in data.files}


def predict_actors(workdir, video, tracks, *, num_clips: int | None = None, step: int | None = None,
                   embedder=None) -> dict:
  """-> {'step', 'actors': [{'id', 'motion': [(name, p)], 'shape': [(name, p)]}] (sorted by p),
  'notes': [what was mended in the tracks]}.

  tracks: a path to a JSON file, or its decoded content (see `data.tracks.parse_tracks`)."""
  embedder = embedder or get_embedder(workdir, step=step, num_clips=num_clips)
  config = embedder.config
  if not config.model.actors:
    raise CheckpointError(f"the run {str(workdir)!r} has no per-actor features (model.actors=False); train one "
                          "with --config actors")
  classifier = load_classifier(workdir)
  if "step" in classifier and int(classifier["step"]) != embedder.step:
    raise CheckpointError(f"the per-actor classifiers of {str(workdir)!r} were fit on step {int(classifier['step'])}'s "
                          f"features, and step {embedder.step} embeds; run `sora-jax eval --workdir {workdir}` again")
  ids, out, notes = embed_tracks(embedder, video, tracks)
  x = np.asarray(l2_normalize(out[str(classifier["feature"])]))  # [A, D]
  result = []
  for a, actor in enumerate(ids):
    row = {"id": actor}
    for what in ("motion", "shape"):
      if f"{what}_w" in classifier:
        logits = x[a] @ classifier[f"{what}_w"] + classifier[f"{what}_b"]
        p = np.exp(logits - logits.max())
        p /= p.sum()
        names = classifier[f"{what}_names"]
        row[what] = [(str(names[i]), float(p[i])) for i in np.argsort(-p, kind="stable")]
    result.append(row)
  return {"step": embedder.step, "actors": result, "notes": notes}
