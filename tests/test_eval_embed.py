"""Embedding extraction: sharded over 8 devices it equals the plain model, clip averaging, shards on disk."""

import numpy as np
import pytest

from sora_jax.errors import DataError


def tiny_config():
  import importlib.util
  import pathlib
  spec = importlib.util.spec_from_file_location("_default", pathlib.Path(__file__).parents[1] / "configs/default.py")
  mod = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(mod)
  c = mod.get_config()
  c.data.name = "moving_shapes/small"
  c.data.num_frames, c.data.frame_size = 4, 16
  c.model.width, c.model.hidden_size, c.model.head_hidden, c.model.embed_dim = 0.125, 16, 16, 8
  c.eval.batch_size = 16
  return c


def _fake_batches(rng, sizes, clips=2):
  for i, n in enumerate(sizes):
    video = rng.integers(0, 255, size=(n, clips, 4, 16, 16, 3), dtype=np.uint8)
    mask = np.ones(n, bool)
    mask[-1] = i != len(sizes) - 1  # last batch ends with one padding row
    yield {"video": video, "label": np.arange(n) % 3, "motion_label": np.arange(n) % 4,
           "video_id": 100 * i + np.arange(n), "mask": mask}


def test_sharded_extraction_matches_model(tmp_path):
  import jax
  from sora_jax.evaluation import embed
  from sora_jax.models import build_encoder, init_variables
  assert jax.device_count() == 8
  config = tiny_config()
  variables = init_variables(config, jax.random.PRNGKey(0))
  batches = list(_fake_batches(np.random.default_rng(0), [8, 5]))  # 5 is not a multiple of 8: padded
  rows = list(embed.embed_batches(config, variables, batches))
  assert [len(r["video_id"]) for r in rows] == [8, 4]  # the padding row is dropped
  apply = jax.jit(build_encoder(config).apply)
  for batch, r in zip(batches, rows):
    m = batch["mask"]
    per_clip = [apply(variables, batch["video"][:, c])["pooled"] for c in range(2)]
    unit = [np.asarray(p) / np.linalg.norm(p, axis=-1, keepdims=True) for p in per_clip]
    np.testing.assert_allclose(r["pooled"], ((unit[0] + unit[1]) / 2)[m], atol=2e-5)
    np.testing.assert_array_equal(r["video_id"], batch["video_id"][m])
    np.testing.assert_array_equal(r["motion_label"], batch["motion_label"][m])

  # Streamed to disk in chunks of 5 examples: two shards, loaded back in order.
  writer = embed.ShardWriter(tmp_path / "emb", chunk=5)
  for r in rows:
    writer.add(r)
  meta = writer.close({"split": "x"})
  assert meta["count"] == 12 and meta["shards"] == 2
  back = embed.load(tmp_path / "emb")
  np.testing.assert_array_equal(back["video_id"], np.concatenate([r["video_id"] for r in rows]))
  np.testing.assert_allclose(back["embedding"], np.concatenate([r["embedding"] for r in rows]))


def test_shuffle_frames_is_a_seeded_permutation():
  from sora_jax.evaluation import embed
  video = np.broadcast_to(np.arange(6, dtype=np.uint8)[None, None, :, None, None, None], (3, 2, 6, 2, 2, 3)).copy()
  a = embed.shuffle_frames(video, 1)
  np.testing.assert_array_equal(a, embed.shuffle_frames(video, 1))
  assert not np.array_equal(a, video)
  # Every clip still holds each frame once; clips are permuted independently.
  assert (np.sort(a[:, :, :, 0, 0, 0], axis=-1) == np.arange(6)).all()
  assert len({tuple(a[i, j, :, 0, 0, 0]) for i in range(3) for j in range(2)}) > 1


def test_load_errors(tmp_path):
  from sora_jax.evaluation import embed
  with pytest.raises(DataError, match="no complete embeddings"):
    embed.load(tmp_path / "missing")
  embed.ShardWriter(tmp_path / "empty").close({"split": "test"})
  with pytest.raises(DataError, match="gave no examples"):
    embed.load(tmp_path / "empty")
