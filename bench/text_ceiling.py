"""How far held-out phrasings can go on a frozen text tower, without training a video encoder.

The `text` run's held-out text->video R@5 sits far below the templates'. This separates the text
side from the video side: each test video is represented by an *ideal* video vector, one free
vector per attribute combination (shape x colour x direction x speed: 320 on moving_shapes), so
the video side is perfect by construction. Those vectors and the text side are trained with the
run's own loss (`objectives.video_text`: symmetric InfoNCE, learned temperature, same-caption
positives) on the training phrasings of the train split, embedded by the frozen MiniLM; then
test captions query the 400 test videos as eval does (`evaluation.retrieval.recall_at_k`; a hit: a
video whose one-template caption is the query video's, i.e. the same attributes).
Rows: the tower's own space with no training (held-out query against the template captions), and
the learned text side (a linear projection to `--dim`, the `text` config's, or none: the tower's
space) at each `text.feature_noise`. The last column: how often the top video has each attribute
right, so it shows which words the tower does not carry from training to held-out phrasings.
Prints a table, then one JSON line.

  .venv/bin/python bench/text_ceiling.py                       # about 2 min on 2 cores
  .venv/bin/python bench/text_ceiling.py --smoke                # seconds: tiny sizes
"""

from __future__ import annotations

import argparse
import json
import os
import sys

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

ATTRS = ("label", "colour", "direction", "speed")


def combo(a: dict) -> int:
  return ((a["label"] * 8 + a["colour"]) * 4 + a["direction"]) * 2 + a["speed"]


def main(argv=None) -> dict:
  ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  ap.add_argument("--train-videos", type=int, default=2000)
  ap.add_argument("--test-videos", type=int, default=400)
  ap.add_argument("--steps", type=int, default=3000)
  ap.add_argument("--dim", type=int, default=64, help="the projection's width (model.text_embed_dim)")
  ap.add_argument("--noise", default="0,0.04,0.08", help="text.feature_noise values, comma-separated")
  ap.add_argument("--smoke", action="store_true", help="tiny sizes: checks that it runs")
  args = ap.parse_args(argv)
  if args.smoke:
    args.train_videos, args.test_videos, args.steps, args.noise = 64, 32, 5, "0.08"

  import jax
  import jax.numpy as jnp
  import optax

  from sora_jax.data import captions, synthetic
  from sora_jax.evaluation.retrieval import recall_at_k
  from sora_jax.linalg import l2_normalize
  from sora_jax.models.text_encoder import load_text_tower
  from sora_jax.objectives.video_text import video_text

  kind, tower = "moving_shapes", load_text_tower()
  train_attrs = [synthetic.attributes(kind, "train", i) for i in range(args.train_videos)]
  train_caps = [captions.video_phrasings(kind, "train", i) for i in range(args.train_videos)]
  distinct = sorted({c for cs in train_caps for c in cs})
  ids = {c: j for j, c in enumerate(distinct)}
  feats = tower.encode(distinct)
  test_attrs = [synthetic.attributes(kind, "test", i) for i in range(args.test_videos)]
  queries = {"template": [captions.video_phrasings(kind, "test", i)[0] for i in range(args.test_videos)],
             "held_out": [captions.held_out_phrasing(kind, "test", i) for i in range(args.test_videos)]}
  qfeats = {k: tower.encode(v) for k, v in queries.items()}
  train_combo = np.array([combo(a) for a in train_attrs])
  test_combo = np.array([combo(a) for a in test_attrs])

  label = np.unique(np.array(queries["template"]), return_inverse=True)[1]  # eval's: one per template caption

  def scores_row(name, text: dict, videos: np.ndarray) -> dict:
    top = np.argmax(text["held_out"] @ videos.T, axis=1)
    right = {a: 100 * float(np.mean([test_attrs[t][a] == test_attrs[q][a] for q, t in enumerate(top)])) for a in ATTRS}
    recalls = {k: recall_at_k(text[k], label, videos, label, (1, 5)) for k in queries}
    return {"text side": name, **{f"{k} R@{n}": 100 * recalls[k][f"R@{n}"] for k in queries for n in (1, 5)},
            "held_out top-1 attribute right": right}

  rows = [scores_row("the tower's own space (no training: held-out vs template captions)", qfeats, qfeats["template"])]
  for proj in ("linear", "none"):
    for noise in [float(x) for x in args.noise.split(",")]:
      dim = args.dim if proj == "linear" else feats.shape[1]
      k_vec, k_proj = jax.random.split(jax.random.PRNGKey(0))
      params = {"video": 0.1 * jax.random.normal(k_vec, (320, dim)), "log_t": jnp.log(0.07)}
      if proj == "linear":
        params["kernel"] = jax.random.normal(k_proj, (feats.shape[1], dim)) / np.sqrt(feats.shape[1])
        params["bias"] = jnp.zeros(dim)
      project = ((lambda p, x: l2_normalize(x @ p["kernel"] + p["bias"])) if proj == "linear"
                 else (lambda p, x: l2_normalize(x)))
      tx = optax.adam(1e-3)

      def loss(p, vids, text, cid, key, project=project, noise=noise):
        text = text + noise * jax.random.normal(key, text.shape) if noise else text
        video = l2_normalize(p["video"][vids])[:, None]
        temp = jnp.clip(jnp.exp(p["log_t"]), 0.01, 1.0)
        return video_text(video, project(p, l2_normalize(text)), cid, jnp.ones(len(vids), bool), temp)[0]

      @jax.jit
      def step(p, opt, vids, text, cid, key, loss=loss, tx=tx):
        value, grads = jax.value_and_grad(loss)(p, vids, text, cid, key)
        updates, opt = tx.update(grads, opt)
        return optax.apply_updates(p, updates), opt, value

      opt, rng = tx.init(params), np.random.default_rng(0)
      for s in range(args.steps):
        batch = rng.integers(0, args.train_videos, 64)
        cid = np.array([ids[train_caps[i][rng.integers(0, len(train_caps[i]))]] for i in batch])
        params, opt, _ = step(params, opt, train_combo[batch], feats[cid], cid, jax.random.PRNGKey(s))
      videos = np.asarray(l2_normalize(params["video"][test_combo]))
      rows.append(scores_row(f"learned: {'linear to ' + str(dim) if proj == 'linear' else 'none'}, noise {noise:g}",
                             {k: np.asarray(project(params, v)) for k, v in qfeats.items()}, videos))

  cols = [f"{k} R@{n}" for k in queries for n in (1, 5)]
  print(f"moving_shapes, ideal video vectors (one per attribute combination), {args.test_videos} test videos, "
        f"{args.train_videos} train videos' phrasings, {args.steps} steps")
  print("| text side | " + " | ".join(cols) + " | held-out top-1 right: shape / colour / direction / speed |")
  print("|---|" + "--:|" * (len(cols) + 1))
  for r in rows:
    right = " / ".join(f"{r['held_out top-1 attribute right'][a]:.1f}" for a in ATTRS)
    print(f"| {r['text side']} | " + " | ".join(f"{r[c]:.1f}" for c in cols) + f" | {right} |")
  result = {"bench": "text_ceiling", "args": vars(args), "rows": rows}
  print(json.dumps(result))
  return result


if __name__ == "__main__":
  main()
