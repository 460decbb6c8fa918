"""Exact search (JAX, blocked, sharded, streamed) against numpy; the faiss IVF index."""

import jax
import numpy as np
import pytest

from sora_jax.apps import search
from sora_jax.parallel import topk
from sora_jax.errors import DataError


def _unit(rng, n, d):
  x = rng.standard_normal((n, d)).astype(np.float32)
  return x / np.linalg.norm(x, axis=1, keepdims=True)


@pytest.fixture(scope="module")
def data():
  rng = np.random.default_rng(0)
  return _unit(rng, 1037, 24), _unit(rng, 9, 24)


def _one_device_mesh():
  return jax.sharding.Mesh(np.asarray(jax.devices()[:1]), ("index",))


def test_exact_equals_numpy_brute_force(data):
  x, q = data
  want_s, want_r = topk.brute_force(q, x, 10)
  got_s, got_r = topk.exact_search(q, x, 10)
  np.testing.assert_array_equal(got_r, want_r)
  np.testing.assert_allclose(got_s, want_s, atol=1e-5)
  assert np.all(np.diff(got_s, axis=1) <= 0)


def test_sharded_equals_single_device(data):
  x, q = data
  assert len(jax.devices()) == 8
  one_s, one_r = topk.exact_search(q, x, 7, block_size=300, mesh=_one_device_mesh())
  all_s, all_r = topk.exact_search(q, x, 7, block_size=300, mesh=topk.default_mesh())
  np.testing.assert_array_equal(all_r, one_r)
  np.testing.assert_allclose(all_s, one_s, atol=1e-6)


def test_streamed_blocks_over_shards_equal_all_at_once(data):
  x, q = data
  shards = [x[:100], x[100:101], x[101:700], x[700:]]  # blocks span shard boundaries
  whole_s, whole_r = topk.exact_search(q, x, 12, block_size=4096)
  for block in (16, 64, 333):
    s, r = topk.exact_search(q, shards, 12, block_size=block, query_batch=4)
    np.testing.assert_array_equal(r, whole_r)
    np.testing.assert_allclose(s, whole_s, atol=1e-6)


def test_memory_mapped_float16_index(data, tmp_path):
  x, q = data
  np.save(tmp_path / "e.npy", x.astype(np.float16))
  mm = np.load(tmp_path / "e.npy", mmap_mode="r")
  want_s, want_r = topk.brute_force(q, mm.astype(np.float32), 5)
  s, r = topk.exact_search(q, mm, 5, block_size=128)
  np.testing.assert_array_equal(r, want_r)
  np.testing.assert_allclose(s, want_s, atol=1e-5)


def test_k_larger_than_index_and_bad_inputs(data):
  x, q = data
  s, r = topk.exact_search(q, x[:5], 50)
  assert r.shape == (9, 5) and sorted(r[0].tolist()) == list(range(5))
  with pytest.raises(DataError, match="k=0"):
    topk.exact_search(q, x, 0)
  with pytest.raises(DataError, match="query dim"):
    topk.exact_search(q[:, :8], x, 3)


def test_ivf_probing_every_cell_is_exact_and_recall_reported(data):
  x, q = data
  _, exact_r = topk.brute_force(q, x, 10)
  ivf = search.IVFIndex.build(x, nlist=8, nprobe=8)
  _, r = ivf.search(q, 10)
  assert search.overlap_with_exact(r, exact_r) == 1.0
  ivf_small = search.IVFIndex.build(x, nlist=8, nprobe=1)
  recall = search.overlap_with_exact(ivf_small.search(q, 10)[1], exact_r)
  assert 0.0 < recall < 1.0


def test_resident_blocks_equal_streamed(data):
  x, q = data
  resident = topk.ExactSearch([x[:500], x[500:]], block_size=256)
  streamed = topk.ExactSearch([x[:500], x[500:]], block_size=256, device_budget=0)
  assert resident.resident is not None and streamed.resident is None
  for searcher in (resident, streamed):
    s, r = searcher.search(q, 6, query_batch=5)
    want_s, want_r = topk.brute_force(q, x, 6)
    np.testing.assert_array_equal(r, want_r)
    np.testing.assert_allclose(s, want_s, atol=1e-5)


def test_cpu_mesh_waits_for_each_launch():
  # XLA:CPU can deadlock with several collective launches in flight (parallel/inflight.py).
  from sora_jax.parallel import inflight
  assert inflight.wait_each_launch(topk.default_mesh())
  assert not inflight.wait_each_launch(_one_device_mesh())
