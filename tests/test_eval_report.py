"""Report files and plots from arrays (no model needed)."""

import json

import numpy as np

from sora_jax.evaluation import report


def _report():
  return {
      "workdir": "/tmp/x", "checkpoint_step": 7,
      "dataset": {"name": "moving_shapes", "num_classes": 3, "num_motion_classes": 4, "splits": {"test": 9}},
      "protocol": {"retrieval": "test queries train, cosine, no mean-centring"},
      "models": {
          "ssl": {"title": "self-supervised", "appearance": {"linear": 0.9, "knn": 0.875, "R@1": 0.5},
                  "motion": {"linear": 0.25}},
          "random": {"title": "random init", "appearance": {"linear": 0.333, "knn": 0.3, "R@1": 0.2}},
      },
  }


def test_tables_and_files(tmp_path):
  r = _report()
  header, rows = report.table_rows(r)
  # Only the columns some model has, in the fixed order; missing figures shown as a dash.
  assert header == ["model", "linear", "kNN", "R@1", "motion linear"]
  assert rows == [["self-supervised", "90.0", "87.5", "50.0", "25.0"], ["random init", "33.3", "30.0", "20.0", "–"]]
  r["chance"] = {"appearance": 0.4, "motion": 0.3}
  assert report.table_rows(r)[1][-1] == ["majority class", "40.0", "40.0", "", "30.0"]
  paths = report.write_report(tmp_path / "eval", r)
  assert json.loads(open(paths["json"]).read())["models"]["ssl"]["appearance"]["knn"] == 0.875
  md = open(paths["md"]).read()
  assert "| self-supervised | 90.0 | 87.5 | 50.0 | 25.0 |" in md and "step 7" in md
  text = report.text_table(r).splitlines()
  assert text[0].startswith("model") and "87.5" in text[2] and len({len(l) for l in text}) == 1


def _png_pixels(path):
  import matplotlib.image
  return matplotlib.image.imread(path)


def test_plots(tmp_path):
  metrics = tmp_path / "metrics.jsonl"
  metrics.write_text("\n".join(json.dumps({"step": s, "loss": 5.0 / s, "contrastive_accuracy": s / 100})
                               for s in range(1, 6)) + "\n{cut")
  assert len(report.read_metrics(metrics)) == 5
  out = report.plot_training_curves(metrics, tmp_path / "curves.png")
  assert _png_pixels(out).shape[1] == 800  # two panels (no knn_accuracy in these rows) x 4 in x 100 dpi
  assert report.plot_training_curves(tmp_path / "none.jsonl", tmp_path / "x.png") is None

  rng = np.random.default_rng(0)
  feats = np.concatenate([rng.normal(size=(10, 6)) + 5 * np.eye(6)[i] for i in range(3)])
  xy = report.project_2d(feats, "pca")
  assert xy.shape == (30, 2)
  # PCA keeps the clusters apart: the centroids are farther apart than the spread inside one.
  cents = np.stack([xy[i * 10:(i + 1) * 10].mean(0) for i in range(3)])
  assert np.linalg.norm(cents[0] - cents[1]) > xy[:10].std(0).sum()
  report.plot_projection(feats, np.repeat([0, 1, 2], 10), tmp_path / "proj.png", class_names=["a", "b", "c"])
  assert _png_pixels(tmp_path / "proj.png").ndim == 3

  clips = rng.integers(0, 255, size=(2, 6, 4, 8, 8, 3), dtype=np.uint8)
  strip = report.clip_strip(clips[0, 0])
  assert strip.shape == (8, 32, 3) and (strip[:, :8] == clips[0, 0, 0]).all() and (strip[:, -8:] == clips[0, 0, -1]).all()
  hits = np.array([[True, False, True, True, False], [False] * 5])
  grey = np.full_like(clips, 128)  # so that only the frames and titles are coloured
  report.plot_retrieval_gallery(grey[:, 0], grey[:, 1:], hits, tmp_path / "gallery.png")
  px = _png_pixels(tmp_path / "gallery.png")[..., :3]
  red = (px[..., 0] > 0.9) & (px[..., 1] < 0.1) & (px[..., 2] < 0.1)
  green = (px[..., 1] > 0.7) & (px[..., 0] < 0.4) & (px[..., 2] < 0.4)
  half = px.shape[0] // 2  # row 0: 3 hits, 2 misses; row 1: 5 misses
  assert green[:half].sum() > red[:half].sum() > 0
  assert green[half:].sum() == 0 and red[half:].sum() > red[:half].sum()
