"""The video_text term against numpy, on any device count; terms compose by name; captions in the pipeline."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from sora_jax import objectives
from sora_jax.config import load_config, validate
from sora_jax.data import captions, synthetic
from sora_jax.data.pipeline import TrainInput
from sora_jax.errors import ConfigError


def _unit(x):
  return x / np.linalg.norm(x, axis=-1, keepdims=True)


def _numpy_video_text(video, text, ids, mask, temp):
  """Direct loops: for each view and each captioned video, cross-entropy of its similarities against the
  uniform distribution over the videos (or captions) with the same caption id, both ways."""
  b, v, _ = video.shape
  valid = [i for i in range(b) if mask[i]]
  losses = []
  for k in range(v):
    s = video[:, k].astype(np.float64) @ text.T.astype(np.float64) / temp
    total = 0.0
    for i in valid:
      pos = [j for j in valid if ids[j] == ids[i]]
      row = np.array([s[i, j] for j in valid])  # video i against every caption
      col = np.array([s[j, i] for j in valid])  # caption i against every video
      lse_r, lse_c = np.log(np.exp(row).sum()), np.log(np.exp(col).sum())
      total += np.mean([lse_r - s[i, j] for j in pos]) / 2 + np.mean([lse_c - s[j, i] for j in pos]) / 2
    losses.append(total / len(valid))
  return float(np.mean(losses))


def _example(b=8, v=2, e=6, seed=0):
  rs = np.random.RandomState(seed)
  video = _unit(rs.normal(size=(b, v, e))).astype(np.float32)
  text = _unit(rs.normal(size=(b, e))).astype(np.float32)
  ids = (np.arange(b) % (b - 1)).astype(np.int32)  # the first and the last video share a caption
  mask = np.arange(b) != b // 2 + 1  # one video has no caption
  return video, text, ids, mask


def test_video_text_matches_numpy_with_shared_captions_and_missing_ones():
  video, text, ids, mask = _example()
  loss, m = objectives.video_text(jnp.asarray(video), jnp.asarray(text), jnp.asarray(ids), jnp.asarray(mask), 0.3)
  np.testing.assert_allclose(float(loss), _numpy_video_text(video, text, ids, mask, 0.3), rtol=1e-5)
  assert 0.0 <= float(m["video_text_accuracy"]) <= 1.0


def test_video_text_rewards_matching_pairs_and_counts_a_shared_caption_as_a_hit():
  rs = np.random.RandomState(1)
  text = _unit(rs.normal(size=(6, 16))).astype(np.float32)
  ids = np.array([0, 1, 2, 3, 3, 4], np.int32)
  text[4] = text[3]  # the same caption string embeds the same way
  video = np.stack([text, text], axis=1)
  mask = np.ones(6, bool)
  good, m = objectives.video_text(video, text, ids, mask, 0.1)
  assert float(m["video_text_accuracy"]) == 1.0
  bad, m_bad = objectives.video_text(video[::-1].copy(), text, ids, mask, 0.1)
  assert float(good) < float(bad) and float(m_bad["video_text_accuracy"]) < 1.0


@pytest.mark.parametrize("n_devices", [1, 2, 8])
def test_video_text_same_on_any_device_count(n_devices):
  video, text, ids, mask = _example(b=16)
  mesh = Mesh(np.array(jax.devices()[:n_devices]), ("data",))
  put = lambda x: jax.device_put(x, NamedSharding(mesh, P("data")))
  loss, _ = jax.jit(lambda *a: objectives.video_text(*a, 0.2))(put(video), put(text), put(ids), put(mask))
  np.testing.assert_allclose(float(loss), _numpy_video_text(video, text, ids, mask, 0.2), rtol=1e-5)


def test_terms_compose_by_name_with_their_weights():
  config = load_config("text", ["objective.infonce_weight=0.5", "objective.video_text_weight=2.0"])
  rs = np.random.RandomState(3)
  b = 4
  outputs = {"embedding": _unit(rs.normal(size=(b, 2, 8))).astype(np.float32),
             "aligned": _unit(rs.normal(size=(b, 2, 64))).astype(np.float32)}  # [B, V, ...]
  params = objectives.init_params(config, jax.random.PRNGKey(0))
  batch = {"caption": rs.normal(size=(b, objectives.TEXT_DIM)).astype(np.float32), "caption_id": np.arange(b),
           "caption_mask": np.ones(b, bool), "label": np.zeros(b, np.int32)}
  loss, m = objectives.compute_loss(config, outputs, batch, params)
  np.testing.assert_allclose(float(loss), 0.5 * float(m["infonce_loss"]) + 2.0 * float(m["video_text_loss"]), rtol=1e-6)
  assert objectives.batch_keys(config) == ("video", "label", "caption", "caption_id", "caption_mask")


def test_registered_terms_are_the_schema_terms():
  from sora_jax.config import schema
  assert tuple(objectives.TERMS) == schema.OBJECTIVE_TERMS
  for term in schema.OBJECTIVE_TERMS:
    assert f"objective.{term}_weight" in schema.BY_NAME


@pytest.mark.parametrize("name, words", [("infonce+infonce", "repeated"), ("infonce+clip", "'clip' is not a term"),
                                         ("", "join terms")])
def test_bad_objective_names_are_one_line(name, words):
  with pytest.raises(ConfigError, match=words):
    validate(load_config("infonce", [f"objective.name={name}"]))


def test_video_text_needs_the_text_head():
  with pytest.raises(ConfigError, match="text_embed_dim"):
    validate(load_config("text", ["model.text_embed_dim=0"]))


def test_any_set_of_terms_validates_in_any_order():
  validate(load_config("text", ["objective.name=video_text+infonce"]))


def test_phrasings_describe_the_video_and_held_out_words_never_occur_in_training():
  a = synthetic.attributes("moving_shapes", "train", 3)
  texts = captions.video_phrasings("moving_shapes", "train", 3)
  assert texts[0] == synthetic.caption("moving_shapes", a).replace("a orange", "an orange")
  assert len(texts) > 2 and all(synthetic.COLOUR_NAMES[a["colour"]] in t for t in texts)
  train_words = {w for i in range(300) for k in ("moving_shapes", "moving_digits")
                 for t in captions.video_phrasings(k, "train", i) for w in t.replace(",", " ").split()}
  held = {w for i in range(300) for k in ("moving_shapes", "moving_digits")
          for w in captions.held_out_phrasing(k, "test", i).replace(",", " ").replace(":", " ").split()}
  shared = held & train_words - set(synthetic.COLOUR_NAMES) - {"a", "an", "the", "of", "in"}
  assert not {w for w in shared if not w.isdigit()}, shared


def test_captions_are_drawn_per_epoch_from_the_seed_and_do_not_change_the_clips():
  config = load_config("text", ["data.name=moving_shapes/small", "train.batch_size=64"])
  rows = lambda texts: np.arange(len(texts), dtype=np.float32)[:, None] * np.ones((1, 3), np.float32)
  with_text = TrainInput(config, caption_features=rows)
  plain = TrainInput(config)
  first = [next(with_text) for _ in range(3)]  # epoch 0 (192 videos / 64 = 3 batches)
  second = next(with_text)  # epoch 1
  np.testing.assert_array_equal(first[0]["video"], next(plain)["video"])
  table = with_text.captions
  for b in first:
    assert b["caption_mask"].all()
    np.testing.assert_array_equal(b["caption"][:, 0], b["caption_id"])  # the row of its own caption
    for vid, cid in zip(b["video_id"], b["caption_id"]):
      assert table.texts[cid] in captions.video_phrasings("moving_shapes", "train", int(vid) % synthetic.SPLIT_STRIDE)
  again = TrainInput(config, caption_features=rows)
  np.testing.assert_array_equal(next(again)["caption_id"], first[0]["caption_id"])  # same seed, same draws
  by_video = lambda batches: {int(v): int(c) for b in batches for v, c in zip(b["video_id"], b["caption_id"])}
  e0, e1 = by_video(first), by_video([second])
  assert sum(e0[v] != c for v, c in e1.items()) > len(e1) // 3  # another epoch draws other phrasings


@pytest.mark.slow
def test_a_text_run_trains_and_its_report_has_video_text_figures(tmp_path):
  from sora_jax.evaluation.run import evaluate
  from sora_jax.training.loop import train
  # One tower (the text config's two towers and time reversal compile 2.4x as long, twice here: the run
  # and its bag-of-words baseline; the aligned head over two towers trains in test_training_configs).
  config = load_config("text", ["data.name=moving_shapes/small", "train.batch_size=16", "train.num_steps=4",
                                "model.frame_input=rgb+diff", "model.time_reversal=False",
                                "train.quick_eval_every=0", "train.log_every=2", "model.width=0.125",
                                "data.num_frames=4", "data.frame_size=16", "model.hidden_size=16",
                                "eval.finetune_epochs=0", "eval.probe_steps=5", "eval.batch_size=32"])
  train(config, tmp_path)
  rep = evaluate(tmp_path, baselines=("bag_of_words",), progress=False)
  text = rep["text"]
  bow = rep["text_baselines"]["bag_of_words"]
  assert bow["step"] == 4 and (tmp_path / "baselines" / "bag_of_words").is_dir()
  assert set(bow["retrieval"]) == {"template", "held_out"} and bow["retrieval"] != text["retrieval"]
  assert set(text["retrieval"]) == {"template", "held_out"}
  for both in text["retrieval"].values():
    for figs in both.values():
      assert 0 <= figs["R@1"] <= figs["R@5"] <= figs["R@10"] <= 1
  assert 0 <= text["zero_shot"]["appearance"] <= 1 and 0 <= text["zero_shot"]["motion"] <= 1
  md = (tmp_path / "eval" / "report.md").read_text()
  assert "## Video-text" in md and "| bag of words (from scratch) | held_out | text to video |" in md


def test_videos_placed_at_their_captions_are_found_by_them_and_zero_shot_reads_the_prompts():
  """Retrieval and zero-shot scores of ideal `aligned` vectors: each video sits exactly at its
  caption's (or its class prompt's) point of the shared space."""
  import jax

  from sora_jax.evaluation import text as text_eval
  config = load_config("text", ["data.name=moving_shapes/small"])
  params = objectives.init_params(config, jax.random.PRNGKey(0))
  index = np.arange(40)
  ids = np.array([synthetic.video_id("test", int(i)) for i in index])
  template = text_eval.eval_captions(config, ids)["template"]
  test = {"video_id": ids, "aligned": text_eval.embed_texts(config, params, template)}
  figs = text_eval.retrieval_figures(config, params, test, ks=(1, 5))
  assert figs["template"]["text_to_video"]["R@1"] == 1.0 and figs["template"]["video_to_text"]["R@1"] == 1.0
  assert 0 <= figs["held_out"]["text_to_video"]["R@1"] <= figs["held_out"]["text_to_video"]["R@5"] <= 1
  labels = np.array([synthetic.attributes("moving_shapes", "test", int(i))["label"] for i in index])
  prompts = text_eval.embed_texts(config, params, [text_eval.APPEARANCE_PROMPT.format(n) for n in synthetic.SHAPES])
  shuffled = (labels + 1) % len(synthetic.SHAPES)
  assert text_eval.zero_shot(config, params, {"aligned": prompts[labels], "label": labels}, synthetic.SHAPES,
                             "label", text_eval.APPEARANCE_PROMPT) == 1.0
  assert text_eval.zero_shot(config, params, {"aligned": prompts[shuffled], "label": labels}, synthetic.SHAPES,
                             "label", text_eval.APPEARANCE_PROMPT) == 0.0
