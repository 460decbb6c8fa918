"""The evaluation report: eval/report.json (every figure), eval/report.md (the table) and plots.

Plots use matplotlib's Agg backend (no display): training curves from metrics.jsonl, a 2-D
projection of test embeddings coloured by class, and a retrieval gallery of thumbnail strips.
"""

from __future__ import annotations

import io
import json

import matplotlib
import numpy as np
from matplotlib.figure import Figure
from sklearn.decomposition import PCA
from sklearn.manifold import TSNE

from sora_jax import storage
from sora_jax.linalg import l2_normalize

# (column title, path in a model's figures) of the main table, in order.
COLUMNS = (
    ("linear", ("appearance", "linear")),
    ("kNN", ("appearance", "knn")),
    ("R@1", ("appearance", "R@1")),
    ("R@5", ("appearance", "R@5")),
    ("R@10", ("appearance", "R@10")),
    ("R@20", ("appearance", "R@20")),
    ("motion linear", ("motion", "linear")),
    ("motion kNN", ("motion", "knn")),
    ("shuffled linear", ("shuffled_appearance", "linear")),
    ("shuffled motion linear", ("shuffled_motion", "linear")),
    ("fine-tune", ("finetune", "accuracy")),
    ("GFLOPs/clip", ("cost", "gflops_per_clip")),
    ("ms/clip", ("cost", "ms_per_clip")),
)


# Row order of the main table: the run, then its baselines (stored reports may hold them in any order).
ROW_ORDER = ("ssl", "random", "pretrained", "supervised", "i3d_kinetics")


def _lookup(figures: dict, path):
  node = figures
  for key in path:
    if not isinstance(node, dict) or key not in node:
      return None
    node = node[key]
  return node


def _fmt(value, path=("",)) -> str:
  """A cell: accuracies and recalls as percentages, costs (path under 'cost') as they are."""
  if value is None:
    return "–"
  if path[0] == "cost":
    return f"{value:.3g}"
  return f"{100 * value:.1f}"


def table_rows(report: dict) -> tuple[list[str], list[list[str]]]:
  """-> (header, rows) of the main table; percentages, '–' where a figure was not computed."""
  columns = [(t, p) for t, p in COLUMNS if any(_lookup(m, p) is not None for m in report["models"].values())]
  header = ["model"] + [t for t, _ in columns]
  models = sorted(report["models"].items(), key=lambda kv: ROW_ORDER.index(kv[0]) if kv[0] in ROW_ORDER else len(ROW_ORDER))
  rows = [[m.get("title", name)] + [_fmt(_lookup(m, p), p) for _, p in columns] for name, m in models]
  chance = report.get("chance") or {}
  if any(v is not None for v in chance.values()):
    # The majority class of the test split, for the classification columns only.
    which = lambda p: "motion" if "motion" in p[0] else "appearance"
    rows.append(["majority class"] + [_fmt(chance.get(which(p))) if p[-1] in ("linear", "knn", "accuracy") else ""
                                      for _, p in columns])
  return header, rows


def markdown_table(report: dict) -> str:
  header, rows = table_rows(report)
  lines = ["| " + " | ".join(header) + " |", "|" + "|".join(["---"] + ["--:"] * (len(header) - 1)) + "|"]
  lines += ["| " + " | ".join(r) + " |" for r in rows]
  return "\n".join(lines)


def text_table(report: dict) -> str:
  """The same table, aligned for a terminal."""
  return _aligned(*table_rows(report), left=1)


ACTOR_COLUMNS = (("motion linear", ("motion", "linear")), ("motion kNN", ("motion", "knn")),
                 ("shape linear", ("shape", "linear")), ("shape kNN", ("shape", "knn")))
ACTOR_SOURCES = (("actor", "per-actor features"), ("clip", "clip embedding, repeated per actor"))


def actor_rows(report: dict) -> tuple[list[str], list[list[str]]] | None:
  """-> (header, rows) of the per-actor table (data with tracks), None without one."""
  models = sorted(((n, m) for n, m in report["models"].items() if m.get("actors")),
                  key=lambda kv: ROW_ORDER.index(kv[0]) if kv[0] in ROW_ORDER else len(ROW_ORDER))
  if not models:
    return None
  header = ["model", "features"] + [t for t, _ in ACTOR_COLUMNS]
  rows = [[m.get("title", name), label] + [_fmt(_lookup(m["actors"][source], p)) for _, p in ACTOR_COLUMNS]
          for name, m in models for source, label in ACTOR_SOURCES if source in m["actors"]]
  chance = models[0][1]["actors"].get("chance") or {}
  rows.append(["majority class", ""] + [_fmt(chance.get(p[0])) for _, p in ACTOR_COLUMNS])
  return header, rows


def _aligned(header, rows, left: int) -> str:
  """A table for a terminal: the first `left` columns aligned left, the figures right."""
  widths = [max(len(r[i]) for r in [header] + rows) for i in range(len(header))]
  fmt = lambda r: "  ".join(c.ljust(w) if i < left else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths)))
  return "\n".join([fmt(header), "  ".join("-" * w for w in widths)] + [fmt(r) for r in rows])


def actor_text(report: dict) -> str:
  """The per-actor table for a terminal ('' without one)."""
  table = actor_rows(report)
  return "" if table is None else "per actor (% of the test split's actors):\n" + _aligned(*table, left=2)


def actor_markdown(report: dict) -> list[str]:
  table = actor_rows(report)
  if table is None:
    return []
  header, rows = table
  return (["## Per actor", "", "| " + " | ".join(header) + " |", "|---|---|" + "--:|" * (len(header) - 2)]
          + ["| " + " | ".join(r) + " |" for r in rows] + [""])


def protocol_text(report: dict) -> str:
  p = report.get("protocol", {})
  return "\n".join(f"- {k}: {v}" for k, v in p.items())


TEXT_TOWERS = {"minilm": "pretrained MiniLM (frozen)", "bag_of_words": "bag of words (from scratch)"}


def tower_label(text_config: dict) -> str:
  """The run's text tower as the report names it: 'minilm', or how many of its layers trained."""
  tower, layers = text_config.get("tower", "minilm"), int(text_config.get("train_layers", 0) or 0)
  return f"pretrained MiniLM (top {layers} layers trained)" if tower == "minilm" and layers else tower


def text_markdown(text: dict | None, baselines: dict | None = None, tower: str = "minilm") -> list[str]:
  """The video-text section of report.md: retrieval R@k both ways per query set and zero-shot
  accuracy, one row per text tower (the run's `tower`, then each baseline's)."""
  if not text:
    return []
  towers = {tower: text, **(baselines or {})}
  lines = ["## Video-text", ""]
  if text["retrieval"]:
    # R@k in order of k, template queries first (a report read back from sorted JSON keeps neither order)
    ks = sorted(next(iter(next(iter(text["retrieval"].values())).values())), key=lambda k: int(k.split("@")[1]))
    lines += ["| text tower | queries | direction | " + " | ".join(ks) + " |",
              "| --- | --- | --- |" + " --: |" * len(ks)]
    for query in sorted(text["retrieval"], key=lambda q: q != "template"):  # query sets outer, towers inner
      for name, figs in towers.items():
        for direction, r in figs.get("retrieval", {}).get(query, {}).items():
          lines.append(f"| {TEXT_TOWERS.get(name, name)} | {query} | {direction.replace('_', ' ')} | "
                       + " | ".join(_fmt(r[k]) for k in ks) + " |")
    lines.append("")
  for name, figs in towers.items():
    zs = figs.get("zero_shot", {})
    lines.append(f"- zero-shot accuracy (class-name prompts), {TEXT_TOWERS.get(name, name)}: appearance "
                 f"{_fmt(zs.get('appearance'))}, motion {_fmt(zs.get('motion'))}")
  return lines + [""]


def write_report(out_dir, report: dict) -> dict[str, str]:
  """Writes report.json and report.md under out_dir; returns their paths."""
  out = storage.path(out_dir)
  out.mkdir(parents=True, exist_ok=True)
  storage.write_text(out / "report.json", json.dumps(report, indent=2, sort_keys=True, default=_json_default))
  ds = report.get("dataset", {})
  md = [
      f"# Evaluation of `{report.get('workdir', '')}`",
      "",
      f"Checkpoint step {report.get('checkpoint_step')}, dataset `{ds.get('name')}` "
      f"({ds.get('num_classes')} classes, {ds.get('num_motion_classes')} motion classes; "
      f"splits {ds.get('splits')}). Accuracies and recalls in %.",
      "",
      markdown_table(report),
      "",
      *actor_markdown(report),
      *text_markdown(report.get("text"), report.get("text_baselines"),
                     tower_label(report.get("config", {}).get("text", {}))),
      "## Protocol",
      protocol_text(report),
      "",
  ]
  plots = report.get("plots", {})
  if plots:
    md += ["## Plots", ""] + [f"![{k}]({storage.path(v).name})" for k, v in plots.items()] + [""]
  storage.write_text(out / "report.md", "\n".join(md))
  return {"json": str(out / "report.json"), "md": str(out / "report.md")}


def _save_figure(fig, out_png) -> None:
  """A figure as PNG at `out_png` (a local path or a URL)."""
  buf = io.BytesIO()
  fig.savefig(buf, format="png", dpi=100)
  out = storage.path(out_png)
  out.parent.mkdir(parents=True, exist_ok=True)
  out.write_bytes(buf.getvalue())


def _json_default(x):
  if isinstance(x, (np.integer,)):
    return int(x)
  if isinstance(x, (np.floating,)):
    return float(x)
  if isinstance(x, np.ndarray):
    return x.tolist()
  return str(x)


def read_metrics(path) -> list[dict]:
  """Rows of metrics.jsonl (malformed lines, e.g. a line cut by a crash, are skipped)."""
  rows = []
  path = storage.path(path)
  if not path.is_file():
    return rows
  for line in path.read_text().splitlines():
    try:
      rows.append(json.loads(line))
    except json.JSONDecodeError:
      continue
  return rows


def plot_training_curves(metrics_path, out_png, keys=("loss", "contrastive_accuracy", "knn_accuracy")) -> str | None:
  """One panel per metric over steps; None when metrics.jsonl holds none of them."""
  rows = [r for r in read_metrics(metrics_path) if "step" in r]
  keys = [k for k in keys if any(isinstance(r.get(k), (int, float)) for r in rows)]
  if not keys:
    return None
  fig = Figure(figsize=(4 * len(keys), 3))  # no pyplot: no global backend or figure state
  axes = fig.subplots(1, len(keys), squeeze=False)
  for ax, key in zip(axes[0], keys):
    pts = [(r["step"], r[key]) for r in rows if isinstance(r.get(key), (int, float))]
    ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o" if len(pts) < 20 else None)
    ax.set_title(key)
    ax.set_xlabel("step")
    ax.grid(alpha=0.3)
  fig.tight_layout()
  _save_figure(fig, out_png)
  return str(out_png)


def project_2d(features, method: str = "pca", seed: int = 0) -> np.ndarray:
  """`[N, D]` -> `[N, 2]` by PCA or t-SNE (sklearn) of the L2-normalised features."""
  x = l2_normalize(features)
  if method == "tsne" and len(x) > 5:
    return TSNE(n_components=2, perplexity=min(30.0, (len(x) - 1) / 3), init="pca", random_state=seed).fit_transform(x)
  if x.shape[1] < 2 or len(x) < 2:
    return np.pad(x[:, :2], ((0, 0), (0, max(0, 2 - x.shape[1]))))
  return PCA(n_components=2, random_state=seed).fit_transform(x)


def plot_projection(features, labels, out_png, *, class_names=None, method="pca", title="", seed=0) -> str:
  """Scatter of a 2-D projection of test embeddings, one colour per class."""
  xy = project_2d(features, method, seed)
  labels = np.asarray(labels)
  fig = Figure(figsize=(5.5, 4.5))
  ax = fig.subplots()
  classes = sorted(set(labels.tolist()))
  cmap = matplotlib.colormaps["tab10" if len(classes) <= 10 else "tab20"]
  for i, c in enumerate(classes):
    sel = labels == c
    name = class_names[c] if class_names is not None and 0 <= c < len(class_names) else str(c)
    ax.scatter(xy[sel, 0], xy[sel, 1], s=8, color=cmap(i % cmap.N), label=name)
  ax.set_title(title or f"test embeddings ({method.upper()})")
  if len(classes) <= 20:
    ax.legend(fontsize=7, markerscale=2, loc="best")
  fig.tight_layout()
  _save_figure(fig, out_png)
  return str(out_png)


def clip_strip(clip, max_frames: int = 4) -> np.ndarray:
  """uint8 `[T, H, W, 3]` -> `[H, W * t, 3]`: t evenly spaced frames side by side."""
  clip = np.asarray(clip)
  idx = np.linspace(0, len(clip) - 1, min(max_frames, len(clip))).round().astype(int)
  return np.concatenate(list(clip[idx]), axis=1)


def plot_retrieval_gallery(query_clips, result_clips, hits, out_png, *, query_titles=None, result_titles=None) -> str:
  """Rows of: query strip, then its top-k result strips framed green (hit) or red (miss).

  query_clips uint8 `[Q, T, H, W, 3]`, result_clips `[Q, K, T, H, W, 3]`, hits bool `[Q, K]`.
  """
  q, k = np.asarray(hits).shape
  fig = Figure(figsize=(2.2 * (k + 1), 0.9 * q + 0.4))
  axes = fig.subplots(q, k + 1, squeeze=False)
  for i in range(q):
    panels = [(query_clips[i], "black", (query_titles or [None] * q)[i] or "query")]
    for j in range(k):
      hit = bool(hits[i][j])
      t = result_titles[i][j] if result_titles else ""
      panels.append((result_clips[i][j], "limegreen" if hit else "red", f"{'hit' if hit else 'miss'} {t}".strip()))
    for ax, (clip, color, title) in zip(axes[i], panels):
      ax.imshow(clip_strip(clip))
      ax.set_xticks([])
      ax.set_yticks([])
      for spine in ax.spines.values():
        spine.set_edgecolor(color)
        spine.set_linewidth(3)
      ax.set_title(title, fontsize=7, color=color if color != "black" else "black")
  fig.tight_layout()
  _save_figure(fig, out_png)
  return str(out_png)
