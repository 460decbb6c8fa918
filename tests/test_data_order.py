"""The training stream's order (sora_jax/data/pipeline.py): hosts read disjoint slices of the same
global batches, every epoch its own permutation, exact continuation from a saved position, eval
visiting every example once, and chunks of the order changing nothing."""

import numpy as np
import pytest
from test_data import small_config, take


@pytest.mark.parametrize("hosts", [2, 4])
def test_hosts_read_disjoint_parts_of_the_same_global_batches(data_dir, hosts):
  from sora_jax.data import pipeline
  c = small_config(data_dir)
  steps = 3
  ref = take(pipeline.TrainInput(c), steps)
  per_host = [take(pipeline.TrainInput(c, process_index=p, process_count=hosts), steps) for p in range(hosts)]
  for s in range(steps):
    parts = [per_host[p][s] for p in range(hosts)]
    ids = np.concatenate([x["video_id"] for x in parts])
    assert len(set(ids.tolist())) == len(ids)  # disjoint within the step
    assert ids.tolist() == ref[s]["video_id"].tolist()  # the same global batch, in order
    assert np.concatenate([x["video"] for x in parts]).tobytes() == ref[s]["video"].tobytes()
  # a whole epoch covers every example once (the index stream each host's pipeline maps over)
  seen = []
  for p in range(hosts):
    it = pipeline.TrainInput(c, process_index=p, process_count=hosts)
    epochs, order = it._order(0, 0, it.steps_per_epoch)
    assert set(epochs.tolist()) == {0} and len(order) == it.steps_per_epoch * it.batch
    seen += [int(i) for i in order]
  assert len(seen) == len(set(seen)) == 192 // 16 * 16


def test_every_epoch_visits_every_example_in_its_own_order(data_dir):
  from sora_jax.data import pipeline
  it = pipeline.TrainInput(small_config(data_dir))
  n = it.steps_per_epoch * it.global_batch
  epochs, order = it._order(0, 0, 3 * it.steps_per_epoch)
  per_epoch = [order[epochs == e].tolist() for e in range(3)]
  assert all(len(o) == n == len(set(o)) for o in per_epoch)  # each epoch: every example once
  assert len({tuple(o) for o in per_epoch}) == 3  # reshuffled each epoch, not one order repeated
  assert pipeline.epoch_permutation(0, 1, 1000).tolist() != pipeline.epoch_permutation(0, 0, 1000).tolist()
  assert pipeline.epoch_permutation(1, 0, 1000).tolist() != pipeline.epoch_permutation(0, 0, 1000).tolist()


def test_exact_continuation_after_restore(data_dir):
  import json

  from sora_jax.data import pipeline
  c = small_config(data_dir)
  it = pipeline.TrainInput(c)
  take(it, 10)
  state = json.loads(json.dumps(it.get_state()))
  after = take(it, 4)  # crosses into epoch 1 (12 steps per epoch)
  restored = pipeline.TrainInput(c)
  restored.set_state(state)
  again = take(restored, 4)
  for x, y in zip(after, again):
    for k in x:
      assert x[k].tobytes() == y[k].tobytes()
  assert restored.get_state()["epoch"] == 1


@pytest.mark.parametrize("hosts", [1, 2, 4])
def test_eval_visits_every_example_once(data_dir, hosts):
  from sora_jax.data import pipeline
  c = small_config(data_dir)
  ids, counts = [], []
  for p in range(hosts):
    batches = list(pipeline.eval_batches(c, "test", batch_size=6, num_clips=2, num_crops=3 if hosts == 1 else 1,
                                         process_index=p, process_count=hosts))
    counts.append(len(batches))
    for b in batches:
      assert b["video"].shape[1:] == ((6 if hosts == 1 else 2), 4, 16, 16, 3)
      ids += b["video_id"][b["mask"]].tolist()
  assert len(set(counts)) == 1
  assert sorted(ids) == sorted(set(ids)) and len(ids) == 64


def test_batches_go_on_exactly_across_chunks_of_the_order(data_dir, monkeypatch):
  """The order reaches tf.data a chunk at a time; a chunk ending mid-epoch or across epochs changes
  nothing in the batches."""
  from sora_jax.data import pipeline
  c = small_config(data_dir)
  ref = pipeline.TrainInput(c)
  steps = 2 * ref.steps_per_epoch + 1
  want = take(ref, steps)
  monkeypatch.setattr(pipeline, "ORDER_CHUNK", 5 * ref.batch)  # a new dataset every 5 steps
  assert ref.steps_per_epoch % 5  # some chunks span two epochs
  got = take(pipeline.TrainInput(c), steps)
  for a, b in zip(want, got):
    assert a["video_id"].tolist() == b["video_id"].tolist()
    assert a["video"].tobytes() == b["video"].tobytes()
