"""Embedding extraction: sharded over 8 devices it equals the plain model, clip averaging, shards on disk."""

import numpy as np
import pytest

from sora_jax.errors import DataError


def tiny_config():
  import importlib.util
  import pathlib
  spec = importlib.util.spec_from_file_location("_default", pathlib.Path(__file__).parents[1] / "configs/infonce.py")
  mod = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(mod)
  c = mod.get_config()
  c.data.name = "moving_shapes/small"
  c.data.num_frames, c.data.frame_size = 4, 16
  c.model.width, c.model.hidden_size, c.model.head_hidden, c.model.embed_dim = 0.125, 16, 16, 8
  c.eval.batch_size = 16
  return c


def test_shard_writer_streams_in_chunks(tmp_path):
  from sora_jax.evaluation import features
  rng = np.random.default_rng(0)
  rows = [{"pooled": rng.normal(size=(n, 3)).astype(np.float32), "label": np.arange(n) % 2,
           "video_id": 10 * i + np.arange(n)} for i, n in enumerate([4, 3, 5])]
  writer = features.ShardWriter(tmp_path / "emb", chunk=6)
  for r in rows:
    writer.add(r)
  meta = writer.close({"split": "x"})
  # Flushed at 7 (4+3) rows, then the last 5 on close: two shards, read back in order.
  assert meta["count"] == 12 and meta["shards"] == 2 and len(list((tmp_path / "emb").glob("shard-*.npz"))) == 2
  back = features.load(tmp_path / "emb")
  np.testing.assert_array_equal(back["video_id"], np.concatenate([r["video_id"] for r in rows]))
  np.testing.assert_array_equal(back["pooled"], np.concatenate([r["pooled"] for r in rows]))
  assert features.read_meta(tmp_path / "emb")["complete"]


def test_shuffle_frames_is_a_seeded_permutation():
  from sora_jax.evaluation import features
  video = np.broadcast_to(np.arange(6, dtype=np.uint8)[None, None, :, None, None, None], (3, 2, 6, 2, 2, 3)).copy()
  a = features.shuffle_frames(video, 1)
  np.testing.assert_array_equal(a, features.shuffle_frames(video, 1))
  assert not np.array_equal(a, video)
  # Every clip still holds each frame once; clips are permuted independently.
  assert (np.sort(a[:, :, :, 0, 0, 0], axis=-1) == np.arange(6)).all()
  assert len({tuple(a[i, j, :, 0, 0, 0]) for i in range(3) for j in range(2)}) > 1


def test_load_errors(tmp_path):
  from sora_jax.evaluation import features
  with pytest.raises(DataError, match="no complete embeddings"):
    features.load(tmp_path / "missing")
  features.ShardWriter(tmp_path / "empty").close({"split": "test"})
  with pytest.raises(DataError, match="gave no examples"):
    features.load(tmp_path / "empty")
