"""`sora-jax prepare SRC OUT`: decode a collection of videos into sharded TFRecords of JPEG frames.

SRC is a folder in the UCF101 layout (SRC/<class>/<video files>) or a manifest (.csv with a header,
or .jsonl) with `path` (relative to the manifest's folder) and optional `label`, `caption`,
`split`, `tracks` (a JSON file of actor boxes per frame, `data.tracks.parse_tracks`). Without a split column, videos are assigned to train/validation/test by a stable hash of
their path. Each video becomes one tf.train.Example: `frames` (JPEG bytes, one per frame, after
fps resampling and short-side resizing), `label` (-1 unknown), `video_id` (stable hash of the
path), `caption`, `path`, `num_frames`, `height`, `width`; with tracks also `boxes` [A * N * 4]
(per actor and kept frame, in pixels of the stored frames), `num_actors`, `actor_ids`.

Work is split into shards (many more than hosts); each shard is written to a temporary file and
renamed (or, for OUT in a bucket such as gs://b/data, uploaded) when complete, with a small JSON
receipt holding its record lengths (readers index a shard without scanning it), so a second run
skips finished shards. Files
that cannot be decoded are skipped and listed with the reason in OUT/prepare_report.json.
"""

from __future__ import annotations

import concurrent.futures as futures
import csv
import hashlib
import io
import json
import multiprocessing
import os
import pathlib

import tensorflow as tf
from PIL import Image
from tqdm import tqdm

from sora_jax import storage
from sora_jax.data import tracks as tracks_lib, video_io
from sora_jax.errors import DataError

PLAN_FILE = "prepare_plan.json"
REPORT_FILE = "prepare_report.json"
INFO_FILE = "dataset_info.json"
RECEIPTS = ".receipts"
SPLITS = ("train", "validation", "test")


def _stable_hash(text: str) -> int:
  return int.from_bytes(hashlib.sha1(text.encode()).digest()[:8], "little") & ((1 << 63) - 1)


def _hash_split(rel: str, val_fraction: float, test_fraction: float) -> str:
  u = (_stable_hash("split:" + rel) % 1_000_000) / 1_000_000
  return "test" if u < test_fraction else "validation" if u < test_fraction + val_fraction else "train"


def class_order(names) -> list[str]:
  """Class names in label order, for `prepare` and `embed` alike: as numbers when every name is an
  integer ("2" before "10"), else as text."""
  names = sorted(set(names))
  if names and all(n.lstrip("-").isdigit() for n in names):
    names = sorted(names, key=int)
  return names


def _key(path: pathlib.Path, root: pathlib.Path) -> str:
  """The spelling-independent name of a file: its real path relative to the real root (or the
  absolute real path when it lies outside), so `x.mp4`, `./x.mp4`, `a/../x.mp4` and a symlink to
  it are one video, with one split and one video_id."""
  real, base = os.path.realpath(path), os.path.realpath(root)
  rel = os.path.relpath(real, base)
  return pathlib.Path(real).as_posix() if rel.startswith("..") else pathlib.Path(rel).as_posix()


def _read_manifest(src: pathlib.Path) -> tuple[list[tuple[int, object]], list[dict]]:
  """-> ([(line, row)], rejected): every row of a .csv/.jsonl manifest with its line number; a line
  that is not UTF-8 text (a caption in another encoding) or a JSON line that does not parse is
  rejected (listed in the report) and the others are read. A CSV header that is not UTF-8, or a
  file that cannot be read as CSV at all, is a DataError."""
  rows, rejected, lines = [], [], []
  for line_no, raw in enumerate(src.read_bytes().splitlines(keepends=True), 1):
    try:
      lines.append((line_no, raw.decode("utf-8")))
    except UnicodeDecodeError as e:
      if line_no == 1 and src.suffix.lower() == ".csv":
        raise DataError(f"manifest {str(src)!r} is not UTF-8 text ({e.reason} at byte {e.start} of its header); "
                        "save it as UTF-8") from None
      rejected.append({"path": f"{src}:{line_no}", "reason": f"not UTF-8 text ({e.reason} at byte {e.start} of the "
                       "line); save the manifest as UTF-8"})
  if src.suffix.lower() == ".csv":
    at = [0]  # the physical line the reader consumed last (a quoted field may span lines)

    def text():
      for line_no, line in lines:
        at[0] = line_no
        yield line
    try:
      rows = [(at[0], row) for row in csv.DictReader(text())]
    except csv.Error as e:
      raise DataError(f"manifest {str(src)!r} cannot be read as CSV ({e}); columns: path[,label,caption,split]") from None
    return rows, rejected
  for line_no, line in lines:
    if not line.strip():
      continue
    try:
      rows.append((line_no, json.loads(line)))
    except ValueError as e:
      rejected.append({"path": f"{src}:{line_no}", "reason": f"not a JSON object ({e})"})
  return rows, rejected


def _manifest_items(src: pathlib.Path) -> tuple[list[dict], list[dict]]:
  rows, rejected = _read_manifest(src)
  items = []
  for line_no, row in rows:
    where = f"{src}:{line_no}"
    if not isinstance(row, dict):
      rejected.append({"path": where, "reason": f"the row is a {type(row).__name__}, not an object with a 'path'"})
      continue
    if not isinstance(row.get("path"), str) or not row["path"]:
      rejected.append({"path": where, "reason": "no 'path' string (columns: path[,label,caption,split])"})
      continue
    split = row.get("split") or None
    if split is not None and split not in SPLITS:
      rejected.append({"path": where, "reason": f"split {split!r} is not one of {SPLITS}"})
      continue
    path = pathlib.Path(row["path"]).expanduser()
    path = path if path.is_absolute() else src.parent / path
    label = row.get("label")
    tracks = row.get("tracks") or None  # a JSON file of per-frame actor boxes, relative like the path
    if tracks is not None:
      tracks = pathlib.Path(str(tracks)).expanduser()
      tracks = str(tracks if tracks.is_absolute() else src.parent / tracks)
    items.append({"path": str(path), "rel": _key(path, src.parent), "label": None if label in (None, "") else str(label),
                  "caption": str(row.get("caption") or ""), "split": split, "tracks": tracks})
  return items, rejected


def scan(src, *, val_fraction=0.0, test_fraction=0.2, extensions=video_io.VIDEO_EXTENSIONS) -> tuple[list, list, list]:
  """-> (videos, class names, rejected). A video is a dict (path, rel: its spelling-independent
  key, label name or None, caption, split); each file appears once (the first spelling kept);
  rejected: [{path, reason}] for duplicates and malformed manifest rows (with their line numbers)."""
  src = pathlib.Path(src).expanduser()
  if not src.exists():
    raise DataError(f"SRC {str(src)!r} does not exist; pass a folder of class sub-folders or a .csv/.jsonl manifest")
  rejected = []
  if src.is_dir():
    items = []
    for path in sorted(p for p in src.rglob("*") if p.is_file() and not p.name.startswith(".")):
      rel = path.relative_to(src).as_posix()
      if path.suffix.lower() in extensions:
        items.append({"path": str(path), "rel": _key(path, src), "label": rel.split("/")[0] if "/" in rel else None,
                      "caption": "", "split": None})
  elif src.suffix.lower() in (".csv", ".jsonl", ".json"):
    items, rejected = _manifest_items(src)
  else:
    raise DataError(f"SRC {str(src)!r} is neither a folder nor a .csv/.jsonl manifest")
  first: dict[str, str] = {}
  unique = []
  for it in items:
    if it["rel"] in first:
      rejected.append({"path": it["path"], "reason": f"duplicate of {first[it['rel']]} (the same file)"})
    else:
      first[it["rel"]] = it["path"]
      unique.append(it)
  if not unique:
    raise DataError(f"SRC {str(src)!r} holds no video files (looked for {', '.join(extensions)})"
                    + (f"; {len(rejected)} rows rejected, e.g. {rejected[0]['path']}: {rejected[0]['reason']}"
                       if rejected else ""))
  for it in unique:
    if it["split"] is None:
      it["split"] = _hash_split(it["rel"], val_fraction, test_fraction)
  classes = class_order(it["label"] for it in unique if it["label"] is not None)
  return unique, classes, rejected


def plan_shards(items, videos_per_shard: int) -> list[dict]:
  """Shards per split, in a fixed order: [{name, split, items}]."""
  shards = []
  for split in SPLITS:
    its = [it for it in items if it["split"] == split]
    n = -(-len(its) // videos_per_shard)
    for k in range(n):
      shards.append({"name": f"{split}-{k:05d}-of-{n:05d}.tfrecord", "split": split,
                     "items": its[k * videos_per_shard:(k + 1) * videos_per_shard]})
  return shards


def _encode_jpeg(frame, quality: int) -> bytes:
  buf = io.BytesIO()
  Image.fromarray(frame).save(buf, format="JPEG", quality=quality)
  return buf.getvalue()


def write_shard(shard: dict, out: str, options: dict, classes: list) -> dict:
  """Decodes and writes one shard (in a worker); returns its receipt."""
  os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

  feature = tf.train.Feature
  cls_index = {c: i for i, c in enumerate(classes)}
  staged = storage.Staged(storage.path(out) / shard["name"], suffix=".tfrecord")
  written, skipped, frames_total, sizes, lengths, notes, max_actors = 0, [], 0, {}, [], [], 0
  with tf.io.TFRecordWriter(staged.name) as writer:
    for it in shard["items"]:
      actor = {}
      try:
        frames, source = video_io.decode_video(it["path"], fps=options["fps"] or None, sources=True,
                                               short_side=options["short_side"] or None,
                                               max_frames=options["max_frames"] or None, threads=options["threads"])
        if it.get("tracks"):  # boxes per kept frame, in pixels of the stored frames
          ids, boxes, mended = tracks_lib.resample(it["tracks"], source, *video_io.video_size(it["path"]),
                                                   frames.shape[2], frames.shape[1])
          actor = {"boxes": feature(float_list=tf.train.FloatList(value=boxes.ravel())),
                   "num_actors": feature(int64_list=tf.train.Int64List(value=[len(ids)])),
                   "actor_ids": feature(bytes_list=tf.train.BytesList(value=[str(a).encode() for a in ids]))}
          max_actors = max(max_actors, len(ids))
          notes += [{"path": it["path"], "tracks": it["tracks"], "note": n} for n in mended]
      except DataError as e:
        skipped.append({"path": it["path"], "reason": str(e)})
        continue
      jpegs = [_encode_jpeg(f, options["jpeg_quality"]) for f in frames]
      ex = tf.train.Example(features=tf.train.Features(feature={
          "frames": feature(bytes_list=tf.train.BytesList(value=jpegs)),
          "num_frames": feature(int64_list=tf.train.Int64List(value=[len(jpegs)])),
          "height": feature(int64_list=tf.train.Int64List(value=[frames.shape[1]])),
          "width": feature(int64_list=tf.train.Int64List(value=[frames.shape[2]])),
          "label": feature(int64_list=tf.train.Int64List(value=[cls_index.get(it["label"], -1)])),
          "video_id": feature(int64_list=tf.train.Int64List(value=[_stable_hash(it["rel"])])),
          "caption": feature(bytes_list=tf.train.BytesList(value=[it["caption"].encode()])),
          "path": feature(bytes_list=tf.train.BytesList(value=[it["rel"].encode()])), **actor,
      }))
      record = ex.SerializeToString()
      writer.write(record)
      lengths.append(len(record))
      written += 1
      frames_total += len(jpegs)
      hw = f"{frames.shape[1]}x{frames.shape[2]}"
      sizes[hw] = sizes.get(hw, 0) + 1
  staged.commit()
  receipt = {"name": shard["name"], "split": shard["split"], "num_examples": written, "num_frames": frames_total,
             "planned": len(shard["items"]), "skipped": skipped, "sizes": sizes, "record_lengths": lengths,
             "max_actors": max_actors, "track_notes": notes}
  storage.write_text(storage.path(out) / RECEIPTS / (shard["name"] + ".json"), json.dumps(receipt))
  return receipt


def _load_receipt(out: str, shard: dict):
  path = storage.path(out) / RECEIPTS / (shard["name"] + ".json")
  if path.is_file() and (storage.path(out) / shard["name"]).is_file():
    return json.loads(path.read_text())
  return None


def prepare(src, out, *, fps: float = 0.0, short_side: int = 128, max_frames: int = 0, videos_per_shard: int = 16,
            workers: int = 1, threads: int = 0, jpeg_quality: int = 90, val_fraction: float = 0.0,
            test_fraction: float = 0.2, progress: bool = True) -> dict:
  """Prepares SRC into OUT (see module docstring); returns the dataset info written to OUT."""
  if not 0 <= val_fraction + test_fraction <= 1 or val_fraction < 0 or test_fraction < 0:
    raise DataError(f"val_fraction={val_fraction} and test_fraction={test_fraction} must be >= 0 with sum <= 1")
  if videos_per_shard < 1 or workers < 1 or not 1 <= jpeg_quality <= 100:
    raise DataError(f"videos_per_shard={videos_per_shard} and workers={workers} must be >= 1, "
                    f"jpeg_quality={jpeg_quality} in [1, 100]")
  items, classes, rejected = scan(src, val_fraction=val_fraction, test_fraction=test_fraction)
  out = os.fspath(storage.path(out))
  (storage.path(out) / RECEIPTS).mkdir(parents=True, exist_ok=True)
  options = {"fps": float(fps), "short_side": int(short_side), "max_frames": int(max_frames),
             "jpeg_quality": int(jpeg_quality), "videos_per_shard": int(videos_per_shard), "threads": int(threads)}
  shards = plan_shards(items, videos_per_shard)
  _check_plan(out, options, classes, shards)
  receipts = {s["name"]: _load_receipt(out, s) for s in shards}
  todo = [s for s in shards if receipts[s["name"]] is None]
  receipts.update(_write_shards(todo, out, options, classes, workers, progress, len(shards)))
  info, report = _summarise(src, items, classes, options, shards, receipts, rejected)
  storage.write_text(storage.path(out) / REPORT_FILE, json.dumps(report, indent=2))
  storage.write_text(storage.path(out) / INFO_FILE, json.dumps(info, indent=2))
  info["report"] = report
  info["resumed_shards"] = len(shards) - len(todo)
  return info


def _check_plan(out: str, options: dict, classes, shards) -> None:
  """A second run into OUT resumes only the same videos with the same options (else DataError)."""
  plan = {"options": {k: v for k, v in options.items() if k != "threads"}, "classes": classes,
          "shards": [[s["name"], [it["rel"] for it in s["items"]]] for s in shards]}
  plan_path = storage.path(out) / PLAN_FILE
  if plan_path.is_file():
    old = json.loads(plan_path.read_text())
    if old != plan:
      raise DataError(f"OUT {out!r} was prepared from other videos or options; use an empty OUT folder "
                      "(or delete it) to start again")
  else:
    storage.write_text(plan_path, json.dumps(plan))


def _write_shards(todo, out: str, options: dict, classes, workers: int, progress: bool, total: int) -> dict:
  """Writes the shards not done yet (in worker processes when workers > 1) -> {name: receipt}."""
  receipts = {}
  bar = None
  if progress:
    bar = tqdm(total=sum(len(s["items"]) for s in todo), unit="video", desc=f"prepare {len(todo)}/{total} shards")
  try:
    if workers == 1 or len(todo) <= 1:
      for s in todo:
        receipts[s["name"]] = write_shard(s, out, options, classes)
        bar and bar.update(len(s["items"]))
    else:
      ctx = multiprocessing.get_context("spawn")  # TensorFlow is not fork-safe
      with futures.ProcessPoolExecutor(max_workers=workers, mp_context=ctx) as pool:
        jobs = {pool.submit(write_shard, s, out, options, classes): s for s in todo}
        for job in futures.as_completed(jobs):
          s = jobs[job]
          receipts[s["name"]] = job.result()
          bar and bar.update(len(s["items"]))
  finally:
    if bar is not None:
      bar.close()
  return receipts


def _summarise(src, items, classes, options: dict, shards, receipts: dict, rejected: list) -> tuple[dict, dict]:
  """-> (dataset info, report of skipped files and rejected rows); DataError when no file could be decoded."""
  skipped = [x for r in receipts.values() for x in r["skipped"]]
  sizes = {}  # "HxW" (after resizing) -> number of videos
  for r in receipts.values():
    for hw, n in r.get("sizes", {}).items():
      sizes[hw] = sizes.get(hw, 0) + n
  splits = {}
  for s in shards:
    r = receipts[s["name"]]
    d = splits.setdefault(s["split"], {"num_examples": 0, "num_frames": 0, "shards": [], "record_lengths": []})
    d["num_examples"] += r["num_examples"]
    d["num_frames"] += r["num_frames"]
    d["shards"].append(s["name"])
    d["record_lengths"].append(r.get("record_lengths"))
  if sum(d["num_examples"] for d in splits.values()) == 0:
    raise DataError(f"none of the {len(items)} files in {str(src)!r} could be decoded; see {REPORT_FILE}: "
                    + "; ".join(f"{x['path']}: {x['reason']}" for x in skipped[:3]))
  info = {"format": "sora_jax.prepared/1", "source": str(src), "classes": classes, "fps": options["fps"] or None,
          "short_side": options["short_side"] or None, "max_frames": options["max_frames"] or None,
          "jpeg_quality": options["jpeg_quality"], "splits": splits, "frame_sizes": sizes,
          "num_skipped": len(skipped), "max_actors": max(r.get("max_actors", 0) for r in receipts.values())}
  report = {"source": str(src), "num_files": len(items), "num_prepared": len(items) - len(skipped),
            "num_skipped": len(skipped), "skipped": skipped, "num_rejected": len(rejected),
            "num_duplicates": sum(r["reason"].startswith("duplicate of") for r in rejected), "rejected": rejected,
            "track_notes": [n for r in receipts.values() for n in r.get("track_notes", [])]}
  return info, report
