"""Class probabilities for one video file: the run's classifier head, a kNN vote over a labelled index,
or zero-shot from class names (a run with a text head: the names' prompts in the video-text space)."""

from __future__ import annotations

import numpy as np

from sora_jax.apps.embed_index import get_embedder
from sora_jax.apps.index import Index
from sora_jax.data import pipeline
from sora_jax.errors import CheckpointError, DataError
from sora_jax.evaluation.probes import knn_votes
from sora_jax.objectives.video_text import temperature as video_text_temperature
from sora_jax.parallel.topk import exact_search
from sora_jax.training.captions import text_vectors


def _class_names(config, num_classes: int) -> list[str]:
  """The dataset's class names when the data stage can tell them, else 'class i'."""
  try:
    names = list(pipeline.dataset_info(config).get("class_names") or [])
  except (OSError, ValueError, KeyError, AttributeError, DataError):
    names = []
  if len(names) != num_classes:
    names = [f"class {i}" for i in range(num_classes)]
  return [str(n) for n in names]


def knn_probabilities(query: np.ndarray, index, *, k: int = 20, temperature: float = 0.07) -> tuple[np.ndarray, list]:
  """Weighted kNN over the labelled rows of `index`: each of the k nearest votes exp((sim - 1) / T).

  query: [E] unit vector -> (probabilities [num_classes], class names); the same vote as
  evaluation's kNN probe.
  """
  labels = index.labels
  known = labels >= 0
  if not known.any():
    raise DataError(f"index {str(index.directory)!r} has no labelled videos; embed a folder of class "
                    "sub-folders or a manifest with labels for kNN prediction")
  rows = np.flatnonzero(known)
  emb = index.embeddings()[rows]
  scores, nn = exact_search(np.asarray(query, np.float32)[None], emb, k)
  num_classes = int(labels.max()) + 1
  votes = knn_votes(scores, labels[rows[nn]], num_classes, temperature)[0]
  names = [f"class {i}" for i in range(num_classes)]
  for item in index.items:
    if item.get("label", -1) >= 0 and item.get("label_name"):
      names[item["label"]] = str(item["label_name"])
  meta_names = index.meta.get("label_names") or []
  for i, n in enumerate(meta_names[:num_classes]):
    if names[i] == f"class {i}":
      names[i] = str(n)
  return votes / votes.sum(), names


DEFAULT_TEMPLATE = "a video of a {}"


def check_labels(labels, template: str) -> list[str]:
  """Class names for zero-shot prediction: at least two, distinct, non-empty; the template has one '{}'."""
  names = [n.strip() for n in (labels.split(",") if isinstance(labels, str) else labels)]
  if any(not n for n in names):
    raise DataError(f"--labels {labels!r} has an empty name; give names separated by commas, e.g. 'square,circle'")
  if len(names) < 2:
    raise DataError(f"--labels {labels!r} names {len(names)} class; zero-shot prediction needs at least two")
  if len(set(names)) != len(names):
    twice = sorted({n for n in names if names.count(n) > 1})
    raise DataError(f"--labels names {', '.join(map(repr, twice))} more than once; give each class once")
  if template.count("{}") != 1:
    raise DataError(f"--template {template!r} must contain '{{}}' once, where the class name goes, "
                    f"e.g. {DEFAULT_TEMPLATE!r}")
  return names


def zero_shot_probabilities(config, params, aligned: np.ndarray, names, template: str = DEFAULT_TEMPLATE) -> np.ndarray:
  """[E_text] video vector -> probabilities over `names`: softmax of the cosine to each name's prompt
  over the run's learned video-text temperature (`config`, `params`: the run's config and objective
  parameters)."""
  text = text_vectors(config, params, [template.format(n) for n in names], cache=False)
  logits = (text @ np.asarray(aligned, np.float32)) / float(video_text_temperature(params))
  probs = np.exp(logits - logits.max())
  return probs / probs.sum()


def predict_video(workdir, video, *, index=None, k: int = 20, temperature: float = 0.07, num_clips: int | None = None,
                  step: int | None = None, embedder=None, labels=None, template: str = DEFAULT_TEMPLATE) -> dict:
  """-> {'method': 'classifier'|'knn'|'zero-shot', 'probabilities': [(name, p)] sorted by p, 'step': int}.

  With `labels` (class names, a list or 'a,b,c'), zero-shot from the names' prompts (`template`) in
  the run's video-text space; with `index` (a path or an `Index`), a kNN vote over its labelled
  videos; otherwise the run's classifier head (model.num_classes > 0), else CheckpointError saying
  how to get one.
  """
  names = check_labels(labels, template) if labels is not None else None
  embedder = embedder or get_embedder(workdir, step=step, num_clips=num_clips)
  if names is not None:
    if embedder.config.model.text_embed_dim < 1:
      raise CheckpointError(f"the run {str(workdir)!r} has no text head (model.text_embed_dim=0); train one with "
                            "--config text (objective video_text) for zero-shot prediction")
    probs = zero_shot_probabilities(embedder.config, embedder.objective_params, embedder.embed_file(video)["aligned"], names, template)
    order = np.argsort(-probs, kind="stable")
    return {"method": "zero-shot", "step": embedder.step,
            "probabilities": [(names[i], float(probs[i])) for i in order]}
  if index is None and not embedder.has_classifier:
    raise CheckpointError(f"the model of {str(workdir)!r} has no classifier head (model.num_classes=0); pass "
                          "--index INDEX (an index of labelled videos from `sora-jax embed`) for a kNN prediction")
  if index is not None and not isinstance(index, Index):
    index = Index.load(index)
  if index is not None and index.count and index.config_hash != embedder.config_hash:
    raise CheckpointError(f"index {str(index.directory)!r} was embedded by another model or step "
                          f"(config {index.config_hash}, step {index.step}); this run is step {embedder.step} "
                          f"(config {embedder.config_hash}): re-embed it with --workdir {workdir}")
  out = embedder.embed_file(video)
  if index is not None:
    probs, names = knn_probabilities(out["embedding"], index, k=k, temperature=temperature)
    method = "knn"
  else:
    logp = out["logits"].astype(np.float64)
    probs = np.exp(logp - logp.max())
    probs /= probs.sum()
    names = _class_names(embedder.config, len(probs))
    method = "classifier"
  order = np.argsort(-probs, kind="stable")
  return {"method": method, "step": embedder.step,
          "probabilities": [(names[i], float(probs[i])) for i in order]}
