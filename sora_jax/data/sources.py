"""Where examples come from: built-in TFDS datasets, TFDS datasets by name, prepared TFRecords.

Every source gives random access by example index (0..N-1 of a split), so that the pipeline can
order a whole epoch by a seeded permutation and split it between hosts exactly. TFRecord files
are indexed once (record offsets, from prepare's record lengths or the headers) and records are
read with ranged reads (`pread` for local files, fsspec elsewhere: `storage.RangeReader`), so
memory stays bounded whatever the dataset size and shards may sit in a bucket.

A `Split` offers, inside tf.data:
  load(index int64 []) -> dict(encoded, num_frames int32, label, motion_label, video_id)
  decode(loaded, frame_indices int32 [k]) -> uint8 [k, H, W, 3]   (decodes only those frames)
"""

from __future__ import annotations

import json
import threading

import numpy as np
import tensorflow as tf
import tensorflow_datasets as tfds

from sora_jax import storage
from sora_jax.config.datasets import data_dir, parse_data_name
from sora_jax.data import actors, captions as captions_lib, synthetic
from sora_jax.data.records import RecordIndex
from sora_jax.data.traced import as_written
from sora_jax.errors import DataError

INFO_FILE = "dataset_info.json"


def _gather_decode(encoded, frame_indices, channels=3):
  """Decodes the selected JPEG/PNG frames of a [N] tf.string: uint8 [k, H, W, 3]."""
  sel = tf.gather(encoded, frame_indices)
  return tf.map_fn(lambda e: tf.io.decode_image(e, channels=channels, expand_animations=False), sel,
                   fn_output_signature=tf.TensorSpec([None, None, channels], tf.uint8))


class Split:
  """Base: num_examples, load(index), decode(loaded, frame_indices), captions()."""
  num_examples: int

  def load(self, index):
    raise NotImplementedError

  def decode(self, loaded, frame_indices):
    raise NotImplementedError

  def captions(self) -> list[list[str]]:
    """The captions of each example, in example order (an empty list: none). Default: none."""
    return [[] for _ in range(self.num_examples)]


def _record_texts(records: RecordIndex, key: str) -> list[list[str]]:
  """The non-blank strings of feature `key` of every record (read on the host, once: captions are
  small; a TFDS Text is one string, a Sequence(Text) several)."""
  out = []
  for i in range(len(records)):
    values = tf.train.Example.FromString(records.read(i)).features.feature[key].bytes_list.value
    out.append([t for t in (v.decode("utf-8", errors="replace") for v in values) if t.strip()])
  return out


def _text_key(features) -> str | None:
  """A TFDS dataset's caption feature: 'caption' (or 'captions', 'text', 'description') when it is a
  Text or a Sequence of Text."""
  for key in ("caption", "captions", "text", "description"):
    f = features[key] if key in features else None
    if isinstance(f, tfds.features.Sequence):
      f = f.feature
    if isinstance(f, tfds.features.Text):
      return key
  return None


# A built-in split whose decoded frames fit in this many bytes is decoded once per process and
# served from memory: PNG decoding was 0.8 of the 2.9 ms of CPU a default-config clip cost.
DECODED_CACHE_BYTES = 1 << 30
_DECODED: dict = {}  # (record paths) -> (videos uint8 [N, L, S, S, 3], labels [N, 3] int64)
_DECODED_LOCK = threading.Lock()


class BuiltinSplit(Split):
  """A split of moving_shapes/moving_digits/moving_actors: one PNG filmstrip [L*S, S, 3] per video."""

  def __init__(self, builder, split):
    self.records = RecordIndex(builder.info.splits[split].filepaths)
    self.num_examples = len(self.records)
    shape = builder.info.features["video"].shape
    self.frames, self.size = shape[0] // shape[1], shape[1]
    self.kind, self.split = builder.KIND, split
    self.extra = {k: (tuple(self.frames if d is None else d for d in shape), tf.as_dtype(dtype))  # tracks, per-actor labels
                  for k, (shape, dtype) in actors.CARRIED.items()} if self.kind == actors.KIND else {}

  def _parse(self, index):
    spec = {"video": tf.io.FixedLenFeature([], tf.string), "label": tf.io.FixedLenFeature([], tf.int64),
            "motion_label": tf.io.FixedLenFeature([], tf.int64), "video_id": tf.io.FixedLenFeature([], tf.int64)}
    spec.update({k: tf.io.FixedLenFeature(shape, dtype) for k, (shape, dtype) in self.extra.items()})
    ex = tf.io.parse_single_example(self.records.tf_read(index), spec)
    strip = tf.io.decode_png(ex["video"], channels=3)
    return tf.reshape(strip, [self.frames, self.size, self.size, 3]), tf.stack(
        [ex["label"], ex["motion_label"], ex["video_id"]]), {k: ex[k] for k in self.extra}

  def decoded(self):
    """(videos, labels) of the whole split in memory, decoded once per process; None if too big."""
    if self.num_examples * self.frames * self.size * self.size * 3 > DECODED_CACHE_BYTES:
      return None
    key = tuple(str(p) for p in self.records.paths)
    with _DECODED_LOCK, tf.init_scope():  # eager, even while tf.data traces a map function
      if key not in _DECODED:
        ds = tf.data.Dataset.range(self.num_examples).map(
            as_written(self._parse), num_parallel_calls=tf.data.AUTOTUNE, deterministic=True).batch(256)
        parts = list(ds.as_numpy_iterator())
        # eager tensors: a map function gathers from them in TF (a Python call per example cost more)
        _DECODED[key] = (tf.constant(np.concatenate([v for v, _, _ in parts])),
                         tf.constant(np.concatenate([lab for _, lab, _ in parts])),
                         {k: tf.constant(np.concatenate([e[k] for _, _, e in parts])) for k in self.extra})
      return _DECODED[key]

  def load(self, index):
    cached = self.decoded()
    if cached is None:
      video, labels, extra = self._parse(index)
    else:
      videos, table, extras = cached
      video, labels = tf.gather(videos, index), tf.gather(table, index)
      extra = {k: tf.gather(v, index) for k, v in extras.items()}
    out = {"encoded": video, "num_frames": tf.constant(self.frames, tf.int32),
           "label": tf.cast(labels[0], tf.int32), "motion_label": tf.cast(labels[1], tf.int32),
           "video_id": labels[2]}
    return dict(out, **{k: tf.cast(v, tf.int32) if v.dtype == tf.int64 else v for k, v in extra.items()})

  def decode(self, loaded, frame_indices):
    return tf.gather(loaded["encoded"], frame_indices)

  def captions(self) -> list[list[str]]:
    """Several phrasings of each video (`data.captions`), its one-template caption first."""
    if self.kind == actors.KIND:  # one caption per video, naming every actor
      return _record_texts(self.records, "caption")
    cached = self.decoded()
    if cached is not None:
      ids = cached[1].numpy()[:, 2]
    else:
      ids = [tf.train.Example.FromString(self.records.read(i)).features.feature["video_id"].int64_list.value[0]
             for i in range(self.num_examples)]
    return [captions_lib.video_phrasings(self.kind, self.split, int(v) % synthetic.SPLIT_STRIDE) for v in ids]


class PreparedSplit(Split):
  """A split written by `sora-jax prepare`: tf.train.Example with JPEG `frames` [N] per video."""

  def __init__(self, root, split, info):
    shards = info["splits"][split]["shards"]
    lengths = info["splits"][split].get("record_lengths")
    self.records = RecordIndex([root / s for s in shards], lengths)
    self.num_examples = len(self.records)
    self.max_actors = int(info.get("max_actors") or 0)
    if self.num_examples != info["splits"][split]["num_examples"]:
      raise DataError(f"{str(root)!r}: split {split!r} holds {self.num_examples} records but {INFO_FILE} says "
                      f"{info['splits'][split]['num_examples']}; run `sora-jax prepare` again")

  def load(self, index):
    spec = {"frames": tf.io.VarLenFeature(tf.string), "label": tf.io.FixedLenFeature([], tf.int64, -1),
            "video_id": tf.io.FixedLenFeature([], tf.int64)}
    if self.max_actors:
      spec.update(boxes=tf.io.VarLenFeature(tf.float32), num_actors=tf.io.FixedLenFeature([], tf.int64, 0))
    ex = tf.io.parse_single_example(self.records.tf_read(index), spec)
    enc = tf.sparse.to_dense(ex["frames"], default_value=b"")
    n = tf.shape(enc, out_type=tf.int32)[0]
    out = {"encoded": enc, "num_frames": n, "label": tf.cast(ex["label"], tf.int32),
           "motion_label": tf.constant(-1, tf.int32), "video_id": ex["video_id"]}
    if self.max_actors:  # the tracks, padded to the dataset's most actors; no per-actor labels
      a = tf.cast(ex["num_actors"], tf.int32)
      boxes = tf.reshape(tf.sparse.to_dense(ex["boxes"]), [a, n, 4])
      out["boxes"] = tf.pad(boxes, [[0, self.max_actors - a], [0, 0], [0, 0]])
      out["actor_label"] = out["actor_motion"] = tf.fill([self.max_actors], -1)
      out["actor_mask"] = tf.range(self.max_actors) < a
    return out

  def decode(self, loaded, frame_indices):
    return _gather_decode(loaded["encoded"], frame_indices)

  def captions(self) -> list[list[str]]:
    """The manifest's `caption` of each video (prepare stores one; empty: none)."""
    return _record_texts(self.records, "caption")


class MemorySplit(Split):
  """Decoded examples held in memory (a mocked or tiny TFDS dataset): video [N_i, H, W, 3] each."""

  def __init__(self, videos, labels, video_ids, captions=None):
    self.videos = videos
    self._captions = captions
    self.labels = np.asarray(labels, np.int32)
    self.video_ids = np.asarray(video_ids, np.int64)
    self.num_examples = len(videos)

  def load(self, index):
    def get(i):
      v = self.videos[int(i)]
      return v, np.int32(len(v)), self.labels[int(i)], self.video_ids[int(i)]
    v, n, label, vid = tf.numpy_function(get, [index], [tf.uint8, tf.int32, tf.int32, tf.int64], stateful=False)
    return {"encoded": tf.ensure_shape(v, [None, None, None, 3]), "num_frames": tf.reshape(n, []),
            "label": tf.reshape(label, []), "motion_label": tf.constant(-1, tf.int32),
            "video_id": tf.reshape(vid, [])}

  def decode(self, loaded, frame_indices):
    return tf.gather(loaded["encoded"], frame_indices)

  def captions(self) -> list[list[str]]:
    return self._captions or super().captions()


class TfdsSplit(Split):
  """A prepared TFDS dataset (tfrecord files) whose 'video' is a tfds Video feature; captions from
  its Text feature (`_text_key`) when it has one."""

  def __init__(self, builder, split, video_key, label_key, text_key=None):
    self.records = RecordIndex(builder.info.splits[split].filepaths)
    self.num_examples = len(self.records)
    self.features, self.video_key, self.label_key = builder.info.features, video_key, label_key
    self.text_key = text_key
    self.decoders = {video_key: tfds.decode.SkipDecoding()}

  def captions(self) -> list[list[str]]:
    return _record_texts(self.records, self.text_key) if self.text_key else super().captions()

  def load(self, index):
    ex = self.features.deserialize_example(self.records.tf_read(index), decoders=self.decoders)
    enc = ex[self.video_key]
    label = tf.cast(ex[self.label_key], tf.int32) if self.label_key else tf.constant(-1, tf.int32)
    return {"encoded": enc, "num_frames": tf.shape(enc, out_type=tf.int32)[0], "label": label,
            "motion_label": tf.constant(-1, tf.int32), "video_id": tf.cast(index, tf.int64)}

  def decode(self, loaded, frame_indices):
    return _gather_decode(loaded["encoded"], frame_indices)


class Source:
  """A dataset: info (dict) and its splits by name."""

  def __init__(self, info: dict, open_split):
    self.info = info
    self._open_split = open_split
    self._splits: dict = {}

  def split(self, name: str) -> Split:
    if name not in self.info["splits"]:
      raise DataError(f"dataset has no split {name!r}; it has {sorted(self.info['splits'])} "
                      "(set config.data.train_split / eval_split)")
    if name not in self._splits:
      self._splits[name] = self._open_split(name)
      if self._splits[name].num_examples == 0:
        raise DataError(f"split {name!r} of the dataset is empty")
    return self._splits[name]


def _builtin(name, root):
  kind = name.split("/")[0]
  b = actors.builder(name, root) if kind == actors.KIND else synthetic.builder(name, root)
  classes = synthetic.SHAPES if kind == actors.KIND else synthetic.class_names(kind)
  motions = actors.MOTIONS if kind == actors.KIND else synthetic.DIRECTIONS
  info = {"name": name, "num_classes": len(classes), "class_names": list(classes),
          "num_motion_classes": len(motions), "motion_names": list(motions),
          "splits": {k: int(v.num_examples) for k, v in b.info.splits.items()},
          "num_frames": b.builder_config.num_frames, "frame_size": b.builder_config.size,
          "max_actors": actors.MAX_ACTORS if kind == actors.KIND else 0}
  return Source(info, lambda s: BuiltinSplit(b, s))


def _prepared(name):
  path = storage.path(name)
  info_path = path / INFO_FILE
  if not info_path.is_file():
    raise DataError(f"{name!r} holds no {INFO_FILE}; create it with `sora-jax prepare SRC {name}`")
  meta = json.loads(info_path.read_text())
  classes = list(meta.get("classes", []))
  info = {"name": f"tfrecord:{name}", "num_classes": len(classes), "class_names": classes,
          "num_motion_classes": 0, "motion_names": [],
          "splits": {k: int(v["num_examples"]) for k, v in meta["splits"].items()},
          "fps": meta.get("fps"), "short_side": meta.get("short_side"), "max_actors": int(meta.get("max_actors") or 0)}
  return Source(info, lambda s: PreparedSplit(path, s, meta))


def _tfds(name, root):
  try:
    b = tfds.builder(name, data_dir=root)
  except Exception as e:  # noqa: BLE001  (tfds raises several types for unknown names)
    raise DataError(f"TFDS dataset {name!r} not found ({type(e).__name__}); check the name with "
                    "`tfds.list_builders()`") from e
  feats = b.info.features
  video_key = "video" if "video" in feats else next(
      (k for k, f in feats.items() if isinstance(f, tfds.features.Video)), None)
  if video_key is None:
    raise DataError(f"TFDS dataset {name!r} has no video feature (features: {sorted(feats)})")
  label_key = "label" if "label" in feats and isinstance(feats["label"], tfds.features.ClassLabel) else None
  text_key = _text_key(feats)
  names = list(feats[label_key].names) if label_key else []
  on_disk = all(p.exists() for s in b.info.splits.values() for p in s.filepaths) if b.info.splits else False

  def open_split(s):
    if on_disk:
      return TfdsSplit(b, s, video_key, label_key, text_key)
    try:  # not prepared on disk (or mocked by tfds.testing.mock_data): decode the split into memory
      ds = b.as_dataset(split=s, shuffle_files=False)
    except AssertionError as e:
      raise DataError(f"TFDS dataset {name!r} is not prepared in {root!r}; run "
                      f"`tfds build {name} --data_dir {root}` (or download it) first") from e
    videos, labels, texts = [], [], []
    for ex in ds.as_numpy_iterator():
      videos.append(np.asarray(ex[video_key], np.uint8))
      labels.append(int(ex[label_key]) if label_key else -1)
      raw = np.atleast_1d(ex[text_key]) if text_key else []
      texts.append([t for t in (bytes(v).decode("utf-8", errors="replace") for v in raw) if t.strip()])
    return MemorySplit(videos, labels, np.arange(len(videos)), texts if text_key else None)

  splits = {k: int(v.num_examples) for k, v in b.info.splits.items()} if on_disk else None
  info = {"name": f"tfds:{name}", "num_classes": len(names), "class_names": names, "num_motion_classes": 0,
          "motion_names": [], "splits": splits}
  src = Source(info, open_split)
  if splits is None:  # learn split sizes from the data (mocked datasets)
    src.info["splits"] = {k: 0 for k in ("train", "validation", "test")}
    for k in list(src.info["splits"]):
      try:
        src._splits[k] = open_split(k)
        src.info["splits"][k] = src._splits[k].num_examples
      except DataError:
        raise
      except Exception:  # noqa: BLE001  (tfds raises several types for an absent split)
        del src.info["splits"][k]
  return src


_CACHE: dict = {}
_CACHE_LOCK = threading.Lock()


def open_source(config) -> Source:
  """The config's dataset (cached per process: built-in datasets are generated once)."""
  kind, arg = parse_data_name(config.data.name)
  root = data_dir(config)
  key = (kind, arg, root)
  with _CACHE_LOCK:
    if key not in _CACHE:
      if kind == "builtin":
        _CACHE[key] = _builtin(arg, root)
      elif kind == "tfrecord":
        _CACHE[key] = _prepared(arg)
      else:
        _CACHE[key] = _tfds(arg, root)
    return _CACHE[key]
