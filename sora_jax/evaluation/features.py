"""Embeddings of a whole split from an encoder's variables, streamed to disk in .npz shards.

Each example's clips (num_clips x num_crops views from `pipeline.eval_batches`) are embedded,
L2-normalised one by one and averaged: one vector per video. The batch axis is sharded over this
process's devices (training's mesh axes, parameters placed by its rules); with several processes
each embeds its share of every batch and the rows are gathered in order. Process 0 writes them
to disk every `chunk` examples. Stored per example: `pooled`
`[D']` (the temporal model's output), `embedding` `[E]` (the projection head's), `label`,
`motion_label`, `video_id`; `logits` `[C]` when the model has a classifier; `aligned` `[E_text]`
(the video in the space shared with text) when it has a text head. With actor tracks in the data,
also `actor_label`, `actor_motion` `[A]` (-1 = no actor) and `actor_mask` `[A]`, and with a model
that has per-actor features (model.actors) `actor_pooled` `[A, D']` and `actor_embedding` `[A, E]`.
"""

from __future__ import annotations

import io
import json
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
from jax.experimental import multihost_utils
from tqdm import tqdm

from sora_jax import storage
from sora_jax.data import pipeline
from sora_jax.data.actors import MAX_ACTORS
from sora_jax.errors import DataError
from sora_jax.linalg import l2_normalize
from sora_jax.models import build_encoder_unchecked, kernels
from sora_jax.models.summary import xla_flops
from sora_jax.models.video_encoder import default_batch_shape
from sora_jax.parallel import mesh as mesh_lib

FIELDS = ("pooled", "embedding", "logits", "aligned", "actor_pooled", "actor_embedding")
ACTOR_KEYS = ("actor_label", "actor_motion", "actor_mask")  # per-actor labels the data carries


def place_variables(config, variables, mesh):
  """The encoder's variables on `mesh` by the sharding rules of training (replicated unless
  config.mesh.fsdp > 1, then sharded as the train state is)."""
  return jax.device_put(variables, mesh_lib.tree_shardings(variables, mesh, config.mesh.fsdp_min_size))


def encoder_apply(config, unroll: int = 1):
  """-> apply(variables, video uint8 [N, T, H, W, 3], boxes=None) -> the encoder's outputs {field: [N, D]}
  (boxes [N, A, T, 4]: with model.actors, also the per-actor outputs [N, A, D])."""
  model = build_encoder_unchecked(config, unroll=unroll)
  return lambda variables, video, boxes=None: model.apply(variables, video, train=False, boxes=boxes)


def make_embed_fn(config, mesh=None, apply=None):
  """-> f(variables, video uint8 [B, C, T, H, W, 3]) -> {field: [B, D]} averaged over the C clips.

  `apply` (default: `encoder_apply(config)`, the run's encoder) maps variables and [N, T, H, W, 3]
  to {field: [N, D]} (another network, e.g. a baseline's, fits here). On `mesh` (default:
  `parallel.mesh.inference_mesh(config)`, the training axes over this machine's devices); `f.mesh`
  is it. The batch is sharded over the batch axes: B must be a multiple of the mesh size
  (`embed_batches` pads); variables should be placed with `place_variables`. Jitted once per batch
  shape; `f.flops_per_clip(variables)` is XLA's count for one clip (the run's encoder unrolled over
  time for it: a scan's body counts once; with tracks, MAX_ACTORS of them). `f.actors`: it takes tracks (`boxes`; the run's encoder
  with model.actors).
  """
  actors = apply is None and bool(config.model.actors)  # another network takes no tracks
  counted = apply or encoder_apply(config, unroll=config.data.num_frames + 1)
  apply = apply or encoder_apply(config)
  mesh = mesh or mesh_lib.inference_mesh(config)
  rows = mesh_lib.batch_sharding(mesh)

  def fn(variables, video, boxes=None):
    b, c = video.shape[:2]
    flat = video.reshape((b * c,) + video.shape[2:])
    if boxes is None:
      out = apply(variables, flat)
    else:  # [B, C, A, T, 4]: the same clips' tracks
      out = apply(variables, flat, boxes.reshape((b * c,) + boxes.shape[2:]))
    res = {}
    for name in FIELDS:
      if name in out:
        x = out[name].astype(jnp.float32)
        if name == "logits":
          x = jax.nn.log_softmax(x)  # clips vote with log-probabilities
        else:
          x = l2_normalize(x)
        res[name] = x.reshape((b, c) + x.shape[1:]).mean(axis=1)
    return res

  jitted = jax.jit(fn, out_shardings=rows, compiler_options=kernels.compiler_options(mesh_lib.platform(mesh)))

  def call(variables, video, boxes=None):
    """boxes [B, C, A, T, 4] (only for the run's own encoder with model.actors): per-actor fields too."""
    if boxes is None:
      return jitted(variables, jax.device_put(video, rows))
    return jitted(variables, jax.device_put(video, rows), jax.device_put(boxes, rows))

  def flops_per_clip(variables) -> float | None:
    shapes = jax.tree_util.tree_map(lambda x: jax.ShapeDtypeStruct(np.shape(x), x.dtype), variables)
    clip = jax.ShapeDtypeStruct(default_batch_shape(config), jnp.uint8)
    if actors:  # a clip as the data gives it: every actor slot's track
      tracks = jax.ShapeDtypeStruct((1, MAX_ACTORS, config.data.num_frames, 4), jnp.float32)
      return xla_flops(counted, shapes, clip, tracks)
    return xla_flops(counted, shapes, clip)

  call.mesh, call.flops_per_clip, call.actors = mesh, flops_per_clip, actors
  return call


def shuffle_frames(video: np.ndarray, seed: int, keys=None) -> np.ndarray:
  """Permutes the time axis of each clip independently: `[B, C, T, H, W, 3]`, seeded. With `keys`
  (an int per row, e.g. video ids), row r's permutation depends on (seed, keys[r]) only, so it
  does not depend on how the rows were batched or split between processes."""
  if keys is None:
    noise = np.random.default_rng(seed).random(video.shape[:3])
  else:
    noise = np.stack([np.random.default_rng([seed, int(k) % 2 ** 63]).random(video.shape[1:3]) for k in keys])
  perm = np.argsort(noise, axis=2)
  return np.take_along_axis(video, perm[..., None, None, None], axis=2)


def _pad_to(x: np.ndarray, n: int) -> np.ndarray:
  if len(x) == n:
    return x
  return np.concatenate([x, np.zeros((n - len(x),) + x.shape[1:], x.dtype)])


def embed_batches(config, variables, batches, *, mesh=None, shuffle_seed: int | None = None, embed_fn=None):
  """Yields host dicts {pooled, embedding[, logits], label, motion_label, video_id} of the real (unmasked) rows.

  Each process embeds its own batches on its own devices. With several processes (batches from
  `pipeline.eval_batches(..., process_index, process_count)`), every batch is gathered from all of
  them in process order, so each process yields every row of the split, in the split's order."""
  mesh = embed_fn.mesh if embed_fn is not None else (mesh or mesh_lib.inference_mesh(config))
  embed_fn = embed_fn or make_embed_fn(config, mesh)
  actors = embed_fn.actors
  variables = place_variables(config, variables, mesh)
  n_dev, gather = mesh.size, jax.process_count() > 1
  for batch in batches:
    video = np.asarray(batch["video"])
    if video.ndim == 5:  # one clip per example
      video = video[:, None]
    b = len(video)
    mask = np.asarray(batch.get("mask", np.ones(b, bool)), bool)
    if not mask.any() and not gather:  # (with several processes every batch takes part in the gather)
      continue
    row = {key: np.asarray(batch.get(key, np.full(b, -1, np.int64))) for key in ("label", "motion_label", "video_id")}
    row.update({key: np.asarray(batch[key]) for key in ACTOR_KEYS if key in batch})
    padded = -(-b // n_dev) * n_dev
    tracks = {}
    if shuffle_seed is not None:  # (the tracks are not permuted with the frames: no per-actor features)
      video = shuffle_frames(video, shuffle_seed, keys=row["video_id"])
    elif actors and "boxes" in batch:
      boxes = np.asarray(batch["boxes"])
      tracks["boxes"] = _pad_to(boxes[:, None] if boxes.ndim == 4 else boxes, padded)
    out = jax.device_get(embed_fn(variables, _pad_to(video, padded), **tracks))
    row.update({k: np.asarray(v)[:b] for k, v in out.items()})
    if gather:
      row, mask = multihost_utils.process_allgather((row, mask), tiled=True)
      if not mask.any():
        continue
    yield {k: np.asarray(v)[mask] for k, v in row.items()}


class ShardWriter:
  """Appends rows and writes `shard-00000.npz`, ... every `chunk` examples, then `meta.json`."""

  def __init__(self, out_dir, chunk: int = 4096):
    self.dir = storage.path(out_dir)
    if self.dir.exists():
      storage.rmtree(self.dir)
    self.dir.mkdir(parents=True, exist_ok=True)
    self.chunk, self.buffer, self.shards, self.count = chunk, [], 0, 0

  def add(self, rows: dict) -> None:
    self.buffer.append(rows)
    if sum(len(r["video_id"]) for r in self.buffer) >= self.chunk:
      self._flush()

  def _flush(self) -> None:
    if not self.buffer:
      return
    merged = {k: np.concatenate([r[k] for r in self.buffer]) for k in self.buffer[0]}
    with (self.dir / f"shard-{self.shards:05d}.npz").open("wb") as f:
      np.savez(f, **merged)
    self.shards += 1
    self.count += len(merged["video_id"])
    self.buffer = []

  def close(self, meta: dict) -> dict:
    self._flush()
    meta = dict(meta, count=self.count, shards=self.shards, complete=True)
    storage.write_text(self.dir / "meta.json", json.dumps(meta, indent=2, default=str))
    return meta


def read_meta(out_dir) -> dict | None:
  path = storage.path(out_dir) / "meta.json"
  return json.loads(path.read_text()) if path.is_file() else None


def load(out_dir, fields=None) -> dict[str, np.ndarray]:
  """Concatenates the shards written by `extract` ({field: [N, ...]})."""
  out_dir = storage.path(out_dir)
  meta = read_meta(out_dir)
  if not meta or not meta.get("complete"):
    raise DataError(f"no complete embeddings in {str(out_dir)!r}; run the extraction again")
  parts = [np.load(io.BytesIO(p.read_bytes())) for p in sorted(out_dir.glob("shard-*.npz"))]
  if not parts:
    raise DataError(f"split {meta.get('split')!r} gave no examples ({out_dir}); check the dataset and split name")
  keys = fields or parts[0].files
  return {k: np.concatenate([p[k] for p in parts]) for k in keys if k in parts[0].files}


def extract(config, variables, split: str, out_dir, *, fingerprint: dict | None = None, shuffle_seed=None,
            max_examples: int = 0, chunk: int = 4096, progress: bool = True, mesh=None, embed_fn=None) -> dict:
  """Embeds every example of `split` into out_dir (reused when `fingerprint` matches); returns the arrays.

  Raises DataError when the split has no examples.
  """
  meta = {"split": split, "fingerprint": fingerprint, "shuffle_seed": shuffle_seed, "max_examples": max_examples,
          "num_clips": config.eval.num_clips, "num_crops": config.eval.num_crops}
  old = read_meta(out_dir)
  reuse = fingerprint is not None and old and old.get("complete") and all(old.get(k) == v for k, v in meta.items())
  lead = jax.process_index() == 0  # with several processes: all embed, process 0 writes
  if jax.process_count() > 1:  # (every process must take the same branch: the gathers pair up)
    reuse = bool(multihost_utils.broadcast_one_to_all(np.asarray(bool(reuse))))
  if reuse:
    return load(out_dir)
  batches = pipeline.eval_batches(config, split, batch_size=config.eval.batch_size, num_clips=config.eval.num_clips,
                                  num_crops=config.eval.num_crops, process_index=jax.process_index(),
                                  process_count=jax.process_count())
  writer = ShardWriter(out_dir, chunk) if lead else None
  start = time.perf_counter()
  kept = []
  bar = _bar(progress and lead, split, max_examples or _split_size(config, split))
  done = 0
  for rows in embed_batches(config, variables, batches, mesh=mesh, shuffle_seed=shuffle_seed, embed_fn=embed_fn):
    if max_examples:
      rows = {k: v[: max_examples - done] for k, v in rows.items()}
    writer.add(rows) if lead else kept.append(rows)
    done += len(rows["video_id"])
    bar.update(len(rows["video_id"]))
    if max_examples and done >= max_examples:
      break
  bar.close()
  if done == 0:
    raise DataError(f"split {split!r} of dataset {config.data.name!r} has no examples; "
                    "check config.data.name/data_dir and the split name")
  if not lead:
    return {k: np.concatenate([r[k] for r in kept]) for k in kept[0]}
  clips = done * int(config.eval.num_clips) * int(config.eval.num_crops)
  writer.close(dict(meta, seconds=round(time.perf_counter() - start, 3), clips=clips))
  return load(out_dir)


def _split_size(config, split):
  try:
    return pipeline.dataset_info(config)["splits"].get(split)
  except Exception:  # noqa: BLE001 - the bar just has no total
    return None


def _bar(enabled: bool, split: str, total):
  return tqdm(total=total, desc=f"embed {split}", unit="clip", disable=not enabled, leave=False,
              file=sys.stderr, dynamic_ncols=True)
