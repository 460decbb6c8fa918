"""tf.data input pipeline: host-local numpy batches by the Batch contract.

Order. Epoch e visits the examples of the split in the order of a permutation seeded by
(seed, e); global batch s of the epoch is positions [s*B, (s+1)*B) of it, and process p of P takes
its slice [p*b, (p+1)*b) with b = B/P. So every global batch is the same whatever P, processes
read disjoint examples, all see N // B batches per epoch (the remainder is dropped), and the
stream position is just (epoch, step).

Randomness. Clip starts and augmentation come from stateless TF ops keyed by
(seed, epoch, example index, view): identical whatever the parallelism or thread scheduling.
"""

from __future__ import annotations

import atexit
import gc
import weakref

import numpy as np
import tensorflow as tf

from sora_jax.config import terms
from sora_jax.data import augment as augment_lib, clips as clips_lib, sources, tracks
from sora_jax.data.traced import as_written
from sora_jax.errors import ConfigError, DataError

_DATA_SALT = 0x5EED_DA7A
ORDER_CHUNK = 1 << 20  # examples whose order one training dataset holds (16 MB); then the next chunk


_LIVE: "weakref.WeakSet" = weakref.WeakSet()


@atexit.register
def _close_all():
  """Stops live tf.data iterators before the interpreter finalises: their threads call back into
  Python (record reads), which would otherwise hang the exit."""
  for x in list(_LIVE):
    x.close()
  gc.collect()


def dataset_info(config) -> dict:
  """num_classes, class_names, num_motion_classes, motion_names, splits {name: count}, ..."""
  return dict(sources.open_source(config).info)


def _check_processes(process_index, process_count):
  if process_count < 1 or not 0 <= process_index < process_count:
    raise ConfigError(f"process_index={process_index} must be in [0, process_count={process_count})")


def _parallel(config):
  n = int(config.data.num_parallel_calls)
  return tf.data.AUTOTUNE if n < 0 else n


def _example_key(seed: int, epoch, index):
  key = tf.constant([seed, _DATA_SALT], tf.int64)
  key = tf.random.experimental.stateless_fold_in(key, tf.cast(epoch, tf.int64))
  return tf.random.experimental.stateless_fold_in(key, tf.cast(index, tf.int64))


def _options(config):
  opts = tf.data.Options()
  opts.deterministic = True
  opts.experimental_optimization.map_parallelization = True
  return opts


def epoch_permutation(seed: int, epoch: int, n: int) -> np.ndarray:
  """The example order of epoch `epoch` (numpy PCG64: same on every machine)."""
  return np.random.default_rng([seed, _DATA_SALT, epoch]).permutation(n).astype(np.int64)


class TrainInput:
  """Endless iterator of host-local training batches (see module docstring for the order).

  Yields dict: video uint8 [b, V, T, S, S, 3], label int32 [b], motion_label int32 [b] (-1 unknown),
  video_id int64 [b]; b = train.batch_size // process_count. With data.augment.on='device' the video is
  cropped and flipped only, and augment float32 [b, V, T, 9] holds the colour draws the step applies.
  With `caption_features` (see `CaptionTable`) also caption [b, ...], caption_id int32 [b],
  caption_mask bool [b]. A dataset with
  actor tracks (moving_actors) adds boxes float32 [b, V, A, T, 4] (normalised (x0, y0, x1, y1) in
  each view's frames), actor_label / actor_motion int32 [b, A] (-1 = no actor), actor_mask bool [b, A].
  """

  def __init__(self, config, *, process_index: int = 0, process_count: int = 1, split: str | None = None,
               caption_features=None):
    _check_processes(process_index, process_count)
    self.config = config
    self.global_batch = int(config.train.batch_size)
    if self.global_batch % process_count:
      raise ConfigError(f"config.train.batch_size={self.global_batch} must be divisible by the number of "
                        f"processes ({process_count})")
    self.batch = self.global_batch // process_count
    self.process_index, self.process_count = process_index, process_count
    self.seed = int(config.seed)
    self.source = sources.open_source(config)
    per_actor = {"actor_infonce", "actor_predictive", "actor_appearance"} & set(terms(config.objective.name))
    if per_actor and not self.source.info.get("max_actors"):
      raise DataError(f"objective {config.objective.name!r} trains per actor, and {config.data.name!r} has no actor "
                      "tracks; train on moving_actors or on a `prepare`d manifest with a tracks column")
    self.split_name = split or config.data.train_split
    self.split = self.source.split(self.split_name)
    self.num_examples = self.split.num_examples
    self.steps_per_epoch = self.num_examples // self.global_batch
    if self.steps_per_epoch == 0:
      raise ConfigError(f"split {self.split_name!r} holds {self.num_examples} videos, fewer than "
                        f"config.train.batch_size={self.global_batch}; lower the batch size")
    self.aug = augment_lib.AugmentConfig.from_config(config)
    self.on_device = config.data.augment.on == "device"
    self.captions = None if caption_features is None else CaptionTable(self.split, caption_features)
    self._epoch, self._step = 0, 0
    self._it = None
    _LIVE.add(self)

  def close(self) -> None:
    """Stops the background pipeline (it restarts from the current position on the next batch)."""
    self._it = None

  # ----- stream position
  def get_state(self) -> dict:
    """JSON-able position of the next batch."""
    return {"epoch": self._epoch, "step": self._step, "seed": self.seed, "split": self.split_name,
            "num_examples": self.num_examples, "global_batch": self.global_batch, "dataset": self.config.data.name}

  def changes_from(self, saved: dict) -> list[str]:
    """What differs between a saved position's stream (`get_state` of an earlier run) and this one,
    as 'field old -> new' (fields an older run did not save are not compared)."""
    mine = self.get_state()
    return [f"{k} {saved[k]!r} -> {mine[k]!r}" for k in ("dataset", "split", "num_examples", "seed", "global_batch")
            if k in saved and saved[k] != mine[k]]

  def set_state(self, state: dict) -> None:
    epoch, step = int(state["epoch"]), int(state["step"])
    if not 0 <= step < self.steps_per_epoch or epoch < 0:
      raise ConfigError(f"input state {state} is outside the stream ({self.steps_per_epoch} steps per epoch)")
    self._epoch, self._step = epoch, step
    self._it = None

  def position(self, global_step: int) -> dict:
    """The stream position of global batch `global_step` (0-based): the same on every process and
    for any process count, since the batch order is fixed by the seed and the global step alone."""
    epoch, step = divmod(int(global_step), self.steps_per_epoch)
    return dict(self.get_state(), epoch=epoch, step=step)

  def seek(self, global_step: int) -> None:
    """The next batch is this process's slice of global batch `global_step`."""
    self.set_state(self.position(global_step))

  # ----- iteration
  def _order(self, epoch: int, step: int, num_steps: int):
    """(epochs, example indices) this process reads in the `num_steps` batches from (epoch, step) on,
    int64 arrays of num_steps * batch."""
    b, gb, p = self.batch, self.global_batch, self.process_index
    epochs, indices = [], []
    while num_steps > 0:
      take = min(num_steps, self.steps_per_epoch - step)
      pos = ((step + np.arange(take))[:, None] * gb + p * b + np.arange(b)[None, :]).reshape(-1)
      indices.append(epoch_permutation(self.seed, epoch, self.num_examples)[pos])
      epochs.append(np.full(pos.size, epoch, np.int64))
      num_steps -= take
      epoch, step = epoch + 1, 0
    return np.concatenate(epochs), np.concatenate(indices)

  def _element(self, epoch, index):
    c = self.config.data
    loaded = self.split.load(index)
    key = _example_key(self.seed, epoch, index)
    frame_idx = clips_lib.train_indices(
        loaded["num_frames"], c.num_frames, c.stride, c.num_views,
        tf.random.experimental.stateless_fold_in(key, tf.constant(1 << 20, tf.int64)),
        sampling=c.sampling, view_gap=c.view_gap, view_strides=tuple(c.view_strides))
    frames = self.split.decode(loaded, tf.reshape(frame_idx, [-1]))  # [V*T, H, W, 3]
    params = augment_lib.draw_params(key, c.num_views, c.num_frames, self.aug)
    crop = params.pop("box")
    video = augment_lib.crop_views(frames, crop, c.num_frames, c.frame_size)  # [V, T, S, S, 3]
    out = {"video": video, "label": loaded["label"], "motion_label": loaded["motion_label"],
           "video_id": loaded["video_id"]}
    if self.on_device:  # the step applies them (device_augment): their draws travel with the clip
      out["augment"] = augment_lib.pack_params(params, c.num_views, c.num_frames)
    else:
      out["params"] = params
    if "boxes" in loaded:  # actor tracks follow the frames and each view's crop: [V, A, T, 4]
      shape = tf.shape(frames)
      out.update(tracks.actor_fields(loaded, tracks.train_boxes(loaded["boxes"], frame_idx, crop, shape[1], shape[2],
                                                                c.frame_size)))
    if self.captions is not None:
      out.update(self.captions.draw(index, tf.random.experimental.stateless_fold_in(key, tf.constant(2 << 20, tf.int64))))
    return out

  def _augment(self, batch):
    """Colour augmentation of a whole batch at once ([b, V] clips; the same numbers as clip by clip,
    at less cost per clip: each op runs once per batch instead of once per example)."""
    video, params = batch.pop("video"), batch.pop("params")
    shape = tf.shape(video)
    flat = lambda x: tf.reshape(x, tf.concat([[-1], tf.shape(x)[2:]], 0))
    video = augment_lib.apply_batch(flat(video), {k: flat(v) for k, v in params.items()}, self.aug)
    return {"video": tf.reshape(video, shape), **batch}

  def dataset(self) -> tf.data.Dataset:
    """The tf.data pipeline of the next `ORDER_CHUNK` examples' batches from the current position.
    The order reaches tf.data as arrays, not through a Python generator: no Python call per example,
    and no Python callback left for TF's threads to call after the objects are gone."""
    steps = max(1, ORDER_CHUNK // self.batch)
    ds = tf.data.Dataset.zip(tuple(tf.data.Dataset.from_tensor_slices(a)
                                   for a in self._order(self._epoch, self._step, steps)))
    ds = ds.map(as_written(self._element), num_parallel_calls=_parallel(self.config), deterministic=True)
    ds = ds.batch(self.batch, drop_remainder=True)
    if not self.on_device:
      ds = ds.map(as_written(self._augment), num_parallel_calls=_parallel(self.config), deterministic=True)
    ds = ds.prefetch(max(1, int(self.config.data.prefetch)))
    return ds.with_options(_options(self.config))

  def __iter__(self):
    return self

  def __next__(self) -> dict:
    if self._it is None:
      self._it = self.dataset().as_numpy_iterator()
    try:
      out = next(self._it)
    except StopIteration:  # the end of a chunk of the order: the next one, from this position
      self._it = self.dataset().as_numpy_iterator()
      out = next(self._it)
    self._step += 1
    if self._step == self.steps_per_epoch:
      self._epoch, self._step = self._epoch + 1, 0
    return out


class CaptionTable:
  """The captions of a split as rows of features, one drawn per example and epoch.

  `features(texts) -> array [len(texts), ...]` turns the split's distinct caption strings into
  rows once (e.g. a frozen text tower's embeddings); inside tf.data, `draw(index, key)` picks one of
  example `index`'s captions (uniformly, from the stateless `key`) and gathers its row.
  """

  def __init__(self, split, features):
    per_example = split.captions()
    self.texts = list(dict.fromkeys(t for texts in per_example for t in texts))
    if not self.texts:
      raise DataError("no video of the training split has a caption, and the objective's video_text term needs "
                      "them; add a `caption` column to the manifest (sora-jax prepare) or drop video_text from "
                      "config.objective.name")
    row = {t: i for i, t in enumerate(self.texts)}
    counts = np.array([len(texts) for texts in per_example], np.int32)
    self.num_without = int(np.sum(counts == 0))
    self.rows = np.array([row[t] for texts in per_example for t in texts] + [0], np.int32)
    self.table = np.asarray(features(self.texts))
    self._counts = tf.constant(counts)
    self._offsets = tf.constant(np.concatenate([[0], np.cumsum(counts)[:-1]]).astype(np.int32))
    self._rows, self._table = tf.constant(self.rows), tf.constant(self.table)

  def draw(self, index, key) -> dict:
    """caption: the features of one caption of example `index`; caption_id int32 (its row; -1 = none);
    caption_mask bool."""
    n = tf.gather(self._counts, index)
    j = tf.random.stateless_uniform([], seed=key, minval=0, maxval=tf.maximum(n, 1), dtype=tf.int32)
    row = tf.where(n > 0, tf.gather(self._rows, tf.gather(self._offsets, index) + j), -1)
    return {"caption": tf.gather(self._table, tf.maximum(row, 0)), "caption_id": row, "caption_mask": n > 0}


def eval_batches(config, split: str, *, batch_size: int, num_clips: int = 1, num_crops: int = 1,
                 process_index: int = 0, process_count: int = 1):
  """Finite iterator over every example of `split` exactly once (across processes).

  Yields dict: video uint8 [b, C, T, S, S, 3] (C = num_clips * num_crops, clip-major), label int32 [b],
  motion_label int32 [b], video_id int64 [b], mask bool [b] (False = padding); with actor tracks also
  boxes [b, C, A, T, 4] and the per-actor entries of `TrainInput`. Batch j of process p
  holds rows j*P*b + p*b .. + b of the split: all P processes yield ceil(N / (P*b)) batches, and
  batch j of every process, in process order, is rows j*P*b .. (j+1)*P*b (gathered in order).
  """
  _check_processes(process_index, process_count)
  if batch_size < 1:
    raise ConfigError(f"eval batch_size={batch_size} must be >= 1")
  if num_crops not in (1, 3):
    raise ConfigError(f"num_crops={num_crops} is not supported; use 1 (centre) or 3")
  if num_clips < 1:
    raise ConfigError(f"num_clips={num_clips} must be >= 1")
  c = config.data
  sp = sources.open_source(config).split(split)
  n = sp.num_examples
  num_batches = -(-n // (process_count * batch_size))
  j, r = np.divmod(np.arange(num_batches * batch_size), batch_size)
  pos = (j * process_count + process_index) * batch_size + r
  mask = pos < n
  index = np.where(mask, pos, 0).astype(np.int64)

  def element(i, m):
    loaded = sp.load(i)
    idx = clips_lib.eval_indices(loaded["num_frames"], c.num_frames, c.stride, num_clips)
    frames = sp.decode(loaded, tf.reshape(idx, [-1]))
    crops = clips_lib.eval_crops(frames, c.frame_size, num_crops)  # [K, C*T, S, S, 3]
    crops = tf.reshape(crops, [num_crops, num_clips, c.num_frames, c.frame_size, c.frame_size, 3])
    video = tf.reshape(tf.transpose(crops, [1, 0, 2, 3, 4, 5]),
                       [num_clips * num_crops, c.num_frames, c.frame_size, c.frame_size, 3])
    out = {"video": video, "label": loaded["label"], "motion_label": loaded["motion_label"],
           "video_id": loaded["video_id"], "mask": m}
    if "boxes" in loaded:  # [C, A, T, 4], in the crops' frames
      shape = tf.shape(frames)
      out.update(tracks.actor_fields(loaded, tracks.eval_boxes(loaded["boxes"], tf.reshape(idx, [-1]), shape[1],
                                                               shape[2], c.frame_size, c.num_frames, num_crops)))
    return out

  ds = tf.data.Dataset.from_tensor_slices((index, mask))
  ds = ds.map(as_written(element), num_parallel_calls=_parallel(config), deterministic=True)
  ds = ds.batch(batch_size).prefetch(max(1, int(c.prefetch))).with_options(_options(config))
  return _EvalIterator(ds, num_batches)


class _EvalIterator:
  """The numpy iterator of an eval dataset, closed at exit like TrainInput; len() = number of batches."""

  def __init__(self, ds, num_batches: int):
    self._it = ds.as_numpy_iterator()
    self._len = num_batches
    _LIVE.add(self)

  def __len__(self) -> int:
    return self._len

  def __iter__(self):
    return self

  def __next__(self) -> dict:
    if self._it is None:
      raise StopIteration
    try:
      return next(self._it)
    except StopIteration:
      self._it = None
      raise

  def close(self) -> None:
    self._it = None
