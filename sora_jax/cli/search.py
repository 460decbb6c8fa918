"""`sora-jax search`: nearest videos of an index to a query (a file, an id/path already indexed, or a sentence)."""

from __future__ import annotations

import json
import os
import sys


def add_arguments(parser) -> None:
  parser.add_argument("--index", required=True, help="index directory written by `sora-jax embed`")
  query = parser.add_mutually_exclusive_group(required=True)
  query.add_argument("--query", help="a video file, or the id or path of an indexed video")
  query.add_argument("--text", help="a sentence describing the videos to find (an index built by a run with a text "
                     "head, e.g. --config text)")
  parser.add_argument("--json", action="store_true", help="one JSON line per query: every result's id, path, score, "
                      "label and label name")
  parser.add_argument("--k", type=int, default=10, help="number of results")
  parser.add_argument("--html", default=None, help="also write an offline HTML page with thumbnail strips here")
  parser.add_argument("--workdir", default=None, help="run that embeds a query file (default: the index's run)")
  parser.add_argument("--approx", action="store_true", help="faiss IVF approximate search (built and cached on first use)")
  parser.add_argument("--nprobe", type=int, default=8, help="IVF cells probed with --approx")
  parser.add_argument("--block-size", type=int, default=65536, help="index rows per streamed block (exact search)")


def thumbnails(path):
  """Frames for a strip (first 600 frames at 64 px), or None when the file is gone or unreadable."""
  from sora_jax.data.video_io import decode_video
  from sora_jax.errors import DataError
  if not path or not os.path.isfile(path):
    return None
  try:
    return decode_video(path, short_side=64, max_frames=600)
  except DataError:
    return None


def format_table(hits) -> str:
  rows = [("rank", "score", "path", "label")]
  for h in hits:
    label = h.get("label_name") or (h.get("label") if h.get("label", -1) >= 0 else "")
    rows.append((str(h["rank"]), f"{h['score']:.4f}", str(h.get("path") or h.get("id")), str(label)))
  widths = [max(len(r[i]) for r in rows) for i in range(3)]
  return "\n".join(f"{r[0]:>{widths[0]}}  {r[1]:>{widths[1]}}  {r[2]:<{widths[2]}}  {r[3]}".rstrip() for r in rows)


def run(args) -> int:
  from sora_jax.apps.index import Index
  from sora_jax.apps.search import query_vector, search_index
  from sora_jax.errors import DataError
  if args.k < 1:
    raise DataError(f"--k={args.k} must be >= 1")
  index = Index.load(args.index)
  if not index.count:
    raise DataError(f"index {args.index!r} is empty; add videos with `sora-jax embed --out {args.index}`")
  if args.text is not None:
    query = {"name": f"text: {args.text}"}
    hits = search_index(index, k=args.k, text=args.text, approximate=args.approx, block_size=args.block_size,
                        workdir=args.workdir)[0]
  else:
    vec, query = query_vector(index, args.query, workdir=args.workdir)
    hits = search_index(index, vec, args.k, approximate=args.approx, nprobe=args.nprobe, block_size=args.block_size)[0]
  if args.json:
    keep = ("rank", "score", "id", "path", "label", "label_name")
    print(json.dumps({"query": args.text if args.text is not None else str(args.query),
                      "results": [{key: h.get(key) for key in keep} for h in hits]}))
  else:
    print(format_table(hits))
  if args.html:
    from sora_jax.apps.html import write_html
    query["frames"] = thumbnails(query.get("path"))
    for h in hits:
      h["frames"] = thumbnails(h.get("path"))
    title = f"sora-jax search: {args.text if args.text is not None else os.path.basename(str(args.query))}"
    path = write_html(args.html, query, hits, title=title)
    print(f"wrote {path}", file=sys.stderr)
  return 0
