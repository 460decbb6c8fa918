"""A self-contained search result page: thumbnail strips inlined as base64 PNG/JPEG, no network.

The page has the query's strip on top, then one row per result: rank, score, label, path and a
strip of frames sampled uniformly over the video. It opens in any browser offline.
"""

from __future__ import annotations

import base64
import html as html_lib
import io
from typing import Sequence

import numpy as np
from PIL import Image

from sora_jax import storage


def frame_strip(frames: np.ndarray, *, num: int = 6, height: int = 64, fmt: str = "PNG") -> bytes:
  """Encodes `num` uniformly spaced frames of uint8 [N, H, W, 3], side by side, as PNG/JPEG bytes."""
  frames = np.asarray(frames)
  if frames.ndim != 4 or frames.shape[-1] != 3 or not len(frames):
    raise ValueError(f"frames must be [N, H, W, 3] with N > 0, got {frames.shape}")
  if frames.dtype != np.uint8:
    frames = np.clip(np.asarray(frames, np.float32) * (255.0 if frames.max() <= 1.0 else 1.0), 0, 255).astype(np.uint8)
  picks = np.linspace(0, len(frames) - 1, num=min(num, len(frames))).round().astype(int)
  h, w = frames.shape[1:3]
  width = max(1, round(w * height / h))
  tiles = [Image.fromarray(frames[i]).resize((width, height), Image.BILINEAR) for i in picks]
  strip = Image.new("RGB", (width * len(tiles) + 2 * (len(tiles) - 1), height), (255, 255, 255))
  for j, tile in enumerate(tiles):
    strip.paste(tile, (j * (width + 2), 0))
  buf = io.BytesIO()
  strip.save(buf, format=fmt, **({"quality": 85} if fmt.upper() == "JPEG" else {}))
  return buf.getvalue()


def _img_tag(frames, fmt: str) -> str:
  if frames is None:
    return '<span class="none">(no preview)</span>'
  try:
    data = base64.b64encode(frame_strip(frames, fmt=fmt)).decode("ascii")
  except (ValueError, OSError):
    return '<span class="none">(no preview)</span>'
  mime = "image/jpeg" if fmt.upper() == "JPEG" else "image/png"
  return f'<img src="data:{mime};base64,{data}" alt="frames">'


_STYLE = """
body { font-family: sans-serif; margin: 1.5em; color: #222; }
table { border-collapse: collapse; } td, th { padding: 4px 10px; border-bottom: 1px solid #ddd; text-align: left; }
.none { color: #999; } .path { font-family: monospace; font-size: 0.85em; } .q { background: #f3f6fb; }
"""


def render_html(query: dict, results: Sequence[dict], *, title: str = "sora-jax search", fmt: str = "PNG") -> str:
  """The page as a string.

  query: {"path"/"name": str, "label": str|None, "frames": uint8 [N,H,W,3] | None}
  results: dicts with rank, score, path, label (name or id) and optional frames.
  """
  esc = html_lib.escape
  rows = []
  for r in results:
    label = r.get("label_name", r.get("label", ""))
    label = "" if label in (None, -1) else label
    rows.append(f"<tr><td>{r['rank']}</td><td>{r['score']:.4f}</td><td>{esc(str(label))}</td>"
                f"<td>{_img_tag(r.get('frames'), fmt)}<div class=path>{esc(str(r.get('path') or r.get('id', '')))}</div></td></tr>")
  qname = query.get("path") or query.get("name") or ""
  qlabel = query.get("label_name", query.get("label"))
  qlabel = "" if qlabel in (None, -1) else f" (label: {esc(str(qlabel))})"
  return (f"<!doctype html><html><head><meta charset=utf-8><title>{esc(title)}</title><style>{_STYLE}</style></head><body>"
          f"<h2>{esc(title)}</h2><table><tr class=q><th>query</th><td colspan=3>{_img_tag(query.get('frames'), fmt)}"
          f"<div class=path>{esc(str(qname))}{qlabel}</div></td></tr>"
          f"<tr><th>rank</th><th>score</th><th>label</th><th>video</th></tr>{''.join(rows)}</table></body></html>")


def write_html(path, query: dict, results: Sequence[dict], **kwargs):
  """Writes `render_html(...)` to `path` (a local path or a URL) and returns it."""
  path = storage.path(path)
  path.parent.mkdir(parents=True, exist_ok=True)
  storage.write_text(path, render_html(query, results, **kwargs))
  return path
