"""The text side of video_text: the bag-of-words tower, training noise on caption features, the rule
held-out words follow, and the baseline's rows in the report."""

import flax
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from sora_jax import objectives
from sora_jax.config import load_config, validate
from sora_jax.data import captions
from sora_jax.errors import ConfigError
from sora_jax.evaluation.report import text_markdown
from sora_jax.objectives.video_text import BOW, text_features
from sora_jax.training.captions import caption_features, text_vectors, token_ids


def _bow_config(*extra):
  return load_config("text", ["data.name=moving_shapes/small", "text.tower=bag_of_words", *extra])


def test_bag_of_words_is_the_mean_of_its_tokens_embeddings_without_padding():
  config = _bow_config()
  params = objectives.init_params(config, jax.random.PRNGKey(0))
  ids = token_ids(["a red square moves left", "a blue circle"])
  assert ids.dtype == np.int32 and (ids[1] == 0).sum() > (ids[0] == 0).sum()  # padded with 0
  got = np.asarray(text_features(config, params, jnp.asarray(ids)))
  table = np.asarray(params[BOW])
  for row, out in zip(ids, got):
    want = table[row[row > 0]].mean(axis=0)
    np.testing.assert_allclose(out, want / np.linalg.norm(want), rtol=1e-5, atol=1e-6)
  np.testing.assert_array_equal(caption_features(config)(["a blue circle"])[0], token_ids(["a blue circle"])[0])


def test_the_bag_of_words_tower_learns_from_the_video_text_loss():
  config = _bow_config()
  params = objectives.init_params(config, jax.random.PRNGKey(0))
  ids = jnp.asarray(token_ids(["a red square", "a blue circle", "a green cross", "a red disc"]))
  video = jnp.asarray(np.random.default_rng(0).normal(size=(4, 2, 64)), jnp.float32)
  video = video / jnp.linalg.norm(video, axis=-1, keepdims=True)
  batch = {"caption": ids, "caption_id": jnp.arange(4), "caption_mask": jnp.ones(4, bool)}
  outputs = {"aligned": video, "embedding": video}  # [B, V, E]
  grads = jax.grad(lambda p: objectives.compute_loss(config, outputs, batch, p)[0])(params)
  used = np.unique(np.asarray(ids))
  norms = np.linalg.norm(np.asarray(grads[BOW]), axis=1)
  assert (norms[used[used > 0]] > 0).all() and norms[0] == 0  # its tokens move; padding does not
  assert np.count_nonzero(norms) == len(used) - 1


def test_feature_noise_is_drawn_from_the_key_only_in_training():
  config = load_config("text", ["text.feature_noise=0.1"])
  raw = jnp.asarray(np.random.default_rng(1).normal(size=(512, 384)), jnp.float32)
  unit = raw / jnp.linalg.norm(raw, axis=1, keepdims=True)
  np.testing.assert_allclose(text_features(config, {}, raw), unit, atol=1e-6)  # no key: evaluation
  a = text_features(config, {}, raw, jax.random.PRNGKey(3))
  np.testing.assert_array_equal(a, text_features(config, {}, raw, jax.random.PRNGKey(3)))
  assert not np.allclose(a, text_features(config, {}, raw, jax.random.PRNGKey(4)))
  assert abs(float(jnp.std(a - unit)) - 0.1) < 0.005
  off = load_config("text", ["text.feature_noise=0.0"])
  np.testing.assert_allclose(text_features(off, {}, raw, jax.random.PRNGKey(3)), unit, atol=1e-6)


def test_the_step_key_reaches_the_noise_and_the_same_key_gives_the_same_loss():
  config = load_config("text", ["text.feature_noise=0.5"])
  params = objectives.init_params(config, jax.random.PRNGKey(0))
  rng = np.random.default_rng(0)
  unit = lambda x: x / np.linalg.norm(x, axis=-1, keepdims=True)
  video = jnp.asarray(unit(rng.normal(size=(8, 64))), jnp.float32)
  outputs = {"aligned": jnp.stack([video] * 2, 1), "embedding": jnp.stack([video] * 2, 1)}
  batch = {"caption": jnp.asarray(unit(rng.normal(size=(8, 384))), jnp.float32), "caption_id": jnp.arange(8),
           "caption_mask": jnp.ones(8, bool)}
  loss = lambda key: float(objectives.compute_loss(config, outputs, batch, params, key)[1]["video_text_loss"])
  assert loss(jax.random.PRNGKey(1)) == loss(jax.random.PRNGKey(1)) != loss(jax.random.PRNGKey(2))
  assert loss(None) == float(objectives.compute_loss(config, outputs, batch, params)[1]["video_text_loss"])


def test_held_out_words_are_read_as_their_class_by_the_frozen_tower():
  """The rule the held-out words follow (data/captions.py): the pretrained tower alone places each
  nearer its own class name than any other class's."""
  from sora_jax.models.text_encoder import load_text_tower
  tower = load_text_tower()
  for table, prompt in ((captions.HELD_OUT.shapes, "a {}"), (captions.HELD_OUT.directions, "it moves {}"),
                        (captions.HELD_OUT.speeds, "it moves {}")):
    names = list(table)
    anchors = tower.encode([prompt.format(n) for n in names])
    for name, words in table.items():
      scores = tower.encode([prompt.format(w) for w in words]) @ anchors.T
      assert (np.argmax(scores, axis=1) == names.index(name)).all(), (name, words, scores)


def test_text_vectors_of_a_bag_of_words_run_are_unit_and_tell_sentences_apart():
  config = _bow_config()
  params = objectives.init_params(config, jax.random.PRNGKey(0))
  v = text_vectors(config, params, ["a red square moves left", "a blue circle moves up"], cache=False)
  np.testing.assert_allclose(np.linalg.norm(v, axis=1), 1, atol=1e-5)
  assert v.shape == (2, config.model.text_embed_dim) and float(v[0] @ v[1]) < 0.999


def test_a_bag_of_words_baseline_needs_a_text_run():
  with pytest.raises(ConfigError, match="bag_of_words"):
    validate(load_config("infonce", ["eval.baselines=random,bag_of_words"]))
  validate(load_config("text", ["eval.baselines=bag_of_words"]))


def test_report_puts_each_towers_rows_side_by_side():
  figs = lambda r1: {"retrieval": {q: {"text_to_video": {"R@1": r1, "R@5": 0.9}, "video_to_text": {"R@1": r1,
                                                                                                  "R@5": 0.8}}
                                   for q in ("template", "held_out")},
                     "zero_shot": {"appearance": 0.5, "motion": 0.25}}
  md = "\n".join(text_markdown(figs(0.7), {"bag_of_words": dict(figs(0.1), step=600)}))
  rows = [line for line in md.splitlines() if line.startswith("| pretrained") or line.startswith("| bag")]
  assert len(rows) == 8
  assert rows[2].startswith("| bag of words (from scratch) | template | text to video | 10.0 | 90.0")
  assert rows[4].startswith("| pretrained MiniLM (frozen) | held_out")
  assert "bag of words (from scratch): appearance 50.0, motion 25.0" in md


def test_train_layers_trains_the_top_of_the_tower_and_nothing_below(tmp_path):
  from sora_jax.models.text_encoder import load_text_tower
  from sora_jax.training.checkpoint import load_run
  from sora_jax.training.loop import train
  config = load_config("text", ["data.name=moving_shapes/small", "train.batch_size=16", "train.num_steps=1",
                                "train.quick_eval_every=0", "model.width=0.125", "text.train_layers=1",
                                "optimizer.learning_rate=0.01", "optimizer.warmup_steps=0",
                                "text.learning_rate_scale=1.0"])
  train(config, tmp_path)
  config, _, params, _ = load_run(tmp_path)
  before = flax.traverse_util.flatten_dict(load_text_tower().params)
  after = flax.traverse_util.flatten_dict(params["text_tower"])
  assert set(before) == set(after)
  moved = {k for k in before if not np.array_equal(np.asarray(before[k]), np.asarray(after[k]))}
  assert moved and all(k[0] == "layer_5" for k in moved), sorted(moved)[:3]
  assert any(k[-1] == "kernel" for k in moved)
  v = text_vectors(config, params, ["a red square moves left", "a red square moves left", "a blue disc"], cache=False)
  np.testing.assert_allclose(v[0], v[1], atol=1e-6)  # the trained tower embeds queries in eval and search
  frozen_config = load_config("text", ["data.name=moving_shapes/small"])
  assert not np.allclose(v, text_vectors(frozen_config, params, ["a red square moves left", "a red square moves left",
                                                                 "a blue disc"], cache=False), atol=1e-3)


def test_the_trained_tower_layers_step_at_their_fraction_of_the_rate():
  """One adamw update from equal gradients: the tower's top layer moves text.learning_rate_scale as far
  as the video side, its lower layers and embeddings not at all (and keep no optimizer state)."""
  from sora_jax.training.optim import build_optimizer
  config = load_config("text", ["text.train_layers=1", "text.learning_rate_scale=0.05", "optimizer.warmup_steps=0",
                                "optimizer.weight_decay=0.0"])
  params = {"encoder": {"head": {"kernel": np.ones((3, 2), np.float32)}},
            "objective": {"text_tower": {"layer_5": {"kernel": np.ones((3, 2), np.float32)},
                                         "layer_4": {"kernel": np.ones((3, 2), np.float32)},
                                         "embeddings": {"word": np.ones((3, 2), np.float32)}}}}
  tx = build_optimizer(config)
  grads = jax.tree_util.tree_map(lambda p: np.full_like(p, 0.5), params)
  updates, _ = tx.update(grads, tx.init(params), params)
  video = np.asarray(updates["encoder"]["head"]["kernel"])
  tower = updates["objective"]["text_tower"]
  assert np.all(video < 0)
  np.testing.assert_allclose(np.asarray(tower["layer_5"]["kernel"]), 0.05 * video, rtol=1e-5)
  assert not np.any(np.asarray(tower["layer_4"]["kernel"])) and not np.any(np.asarray(tower["embeddings"]["word"]))


def test_train_layers_needs_the_pretrained_tower_and_at_most_its_layers():
  with pytest.raises(ConfigError, match="text.tower"):
    validate(_bow_config("text.train_layers=1"))
  with pytest.raises(ConfigError, match="0..6"):
    validate(load_config("text", ["text.train_layers=7"]))


def test_the_text_configs_baselines_are_valid_configs():
  """The named config `text` evaluates supervised and bag_of_words baselines: both are runnable."""
  from sora_jax.evaluation import baselines as bl
  config = load_config("text")
  sup = bl.supervised_config(config, {"num_classes": 5})
  validate(sup)
  assert sup.eval.baselines == ()
  bow = bl.bag_of_words_config(config)
  validate(bow)
  assert bow.text.tower == "bag_of_words" and config.text.tower == "minilm"
  assert bow.train.num_steps == config.train.num_steps and bow.seed == config.seed  # the same budget
