"""Video-text figures of a run with a text head: retrieval both ways and zero-shot classification.

Queries are the test videos' captions, embedded by the frozen text tower and the run's text
projection, against the test videos' `aligned` vectors. A caption describes attributes that
several videos can share, so a retrieved video is a hit when its own caption is the same string
as the query (it fits the description), and a caption ranked for a video is a hit when it is
that video's caption. Two sets of queries: the one-template captions (seen in training) and
held-out phrasings (templates and words never used in training; built-in data only).

Zero-shot: one prompt per class name ("a video of a {}"; motion: "something moves {}"), the
predicted class is the prompt nearest the video.
"""

from __future__ import annotations

import numpy as np

from sora_jax.config.datasets import parse_data_name
from sora_jax.data import captions, synthetic
from sora_jax.evaluation import retrieval
from sora_jax.linalg import l2_normalize
from sora_jax.training.captions import text_vectors

APPEARANCE_PROMPT = "a video of a {}"
MOTION_PROMPT = "something moves {}"


def embed_texts(config, objective_params, texts) -> np.ndarray:
  """Sentences -> [N, E_text] unit vectors in the run's video-text space."""
  return text_vectors(config, objective_params, texts)


def eval_captions(config, video_ids) -> dict[str, list[str]]:
  """{'template': caption per video, 'held_out': phrasing per video} of a built-in split's videos."""
  kind, name = parse_data_name(config.data.name)
  dataset = name.split("/")[0]
  if kind != "builtin" or dataset not in synthetic.KINDS:  # (moving_actors: no phrasings yet)
    return {}
  split = config.data.eval_split
  index = [int(v) % synthetic.SPLIT_STRIDE for v in video_ids]
  return {"template": [captions.video_phrasings(dataset, split, i, count=1)[0] for i in index],
          "held_out": [captions.held_out_phrasing(dataset, split, i) for i in index]}


def retrieval_figures(config, objective_params, test: dict, ks=(1, 5, 10)) -> dict:
  """{'template': {...}, 'held_out': {...}}, each {'text_to_video': R@k, 'video_to_text': R@k}."""
  sets = eval_captions(config, test["video_id"])
  if not sets:
    return {}
  # Videos with the same one-template caption fit the same descriptions: one label per caption string.
  label = np.unique(np.array(sets["template"]), return_inverse=True)[1]
  video = test["aligned"]
  out = {}
  for name, texts in sets.items():
    text = embed_texts(config, objective_params, texts)
    out[name] = {"text_to_video": retrieval.recall_at_k(text, label, video, label, ks),
                 "video_to_text": retrieval.recall_at_k(video, label, text, label, ks)}
  return out


def zero_shot(config, objective_params, test: dict, names, label_key: str, prompt: str) -> float | None:
  """Accuracy of the nearest class prompt on the labelled test videos (None without labels)."""
  labels = np.asarray(test[label_key])
  known = labels >= 0
  if not names or not known.any():
    return None
  text = embed_texts(config, objective_params, [prompt.format(n) for n in names])
  pred = np.argmax(l2_normalize(np.asarray(test["aligned"], np.float32))[known] @ text.T, axis=1)
  return float(np.mean(pred == labels[known]))


def text_figures(config, objective_params, info: dict, test: dict) -> dict:
  """Every video-text figure of a run whose test embeddings hold `aligned`."""
  figs = {"retrieval": retrieval_figures(config, objective_params, test, tuple(k for k in config.eval.retrieval_ks
                                                                               if k <= 10) or (1,))}
  figs["zero_shot"] = {
      "appearance": zero_shot(config, objective_params, test, info.get("class_names"), "label", APPEARANCE_PROMPT),
      "motion": zero_shot(config, objective_params, test, info.get("motion_names"), "motion_label", MOTION_PROMPT),
  }
  return figs
