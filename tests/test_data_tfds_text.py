"""Captions from a TFDS dataset's Text feature: a real builder prepared on disk (tfrecords) and the same
dataset decoded into memory; one caption or several per video; the text run's pipeline reads them."""

import numpy as np
import pytest
import tensorflow_datasets as tfds

from sora_jax.config import load_config
from sora_jax.data import pipeline, sources


class SoraCaptionedClips(tfds.core.GeneratorBasedBuilder):
  """4 tiny clips per split with a label, one caption, and a list of captions (one video has none)."""
  VERSION = tfds.core.Version("1.0.0")

  def _info(self):
    return tfds.core.DatasetInfo(builder=self, features=tfds.features.FeaturesDict({
        "video": tfds.features.Video((4, 16, 16, 3)), "label": tfds.features.ClassLabel(names=["a", "b"]),
        "caption": tfds.features.Text(), "captions": tfds.features.Sequence(tfds.features.Text())}))

  def _split_generators(self, dl_manager):
    return {"train": self._generate_examples(0), "test": self._generate_examples(100)}

  def _generate_examples(self, offset):
    rng = np.random.default_rng(offset)
    for i in range(4):
      yield i, {"video": rng.integers(0, 255, (4, 16, 16, 3), dtype=np.uint8), "label": i % 2,
                "caption": f"clip {offset + i} café" if i != 3 else "",
                "captions": [f"first of {offset + i}", f"second of {offset + i}"][: 2 - (i == 3) * 2]}


@pytest.fixture(scope="module")
def built(tmp_path_factory):
  root = tmp_path_factory.mktemp("tfds")
  SoraCaptionedClips(data_dir=str(root)).download_and_prepare()
  return root


def _config(root, *extra):
  return load_config("text", ["data.name=tfds:sora_captioned_clips", f"data.data_dir={root}", "data.num_frames=4",
                              "data.frame_size=16", "train.batch_size=4", *extra])


def test_text_key_prefers_caption_and_accepts_a_sequence_of_text():
  feats = SoraCaptionedClips(data_dir="/nonexistent").info.features
  assert sources._text_key(feats) == "caption"
  assert sources._text_key(tfds.features.FeaturesDict({"captions": tfds.features.Sequence(tfds.features.Text())})) \
      == "captions"
  assert sources._text_key(tfds.features.FeaturesDict({"label": tfds.features.ClassLabel(num_classes=2)})) is None


def _stored(root, key):
  """The split's `key` in record order, as TFDS itself reads it (it stores examples shuffled)."""
  ds = SoraCaptionedClips(data_dir=str(root)).as_dataset(split="train", shuffle_files=False)
  return [np.atleast_1d(ex[key]).tolist() for ex in ds.as_numpy_iterator()]


def test_captions_of_a_prepared_tfds_split_are_read_in_example_order(built):
  src = sources.open_source(_config(built))
  split = src.split("train")
  assert isinstance(split, sources.TfdsSplit)
  want = [[t.decode() for t in texts if t] for texts in _stored(built, "caption")]
  assert split.captions() == want and sorted(map(len, want)) == [0, 1, 1, 1]  # blank: no caption
  assert {t for texts in want for t in texts} == {"clip 0 café", "clip 1 café", "clip 2 café"}
  several = sources.TfdsSplit(SoraCaptionedClips(data_dir=str(built)), "train", "video", "label", "captions")
  assert several.captions() == [[t.decode() for t in texts] for texts in _stored(built, "captions")]
  assert sorted(map(len, several.captions())) == [0, 2, 2, 2]


def test_a_text_run_draws_the_tfds_captions_beside_the_frames(built):
  config = _config(built)
  rows = lambda texts: np.arange(len(texts), dtype=np.float32)[:, None] * np.ones((1, 3), np.float32)
  feed = pipeline.TrainInput(config, caption_features=rows)
  assert sorted(feed.captions.texts) == ["clip 0 café", "clip 1 café", "clip 2 café"]
  assert feed.captions.num_without == 1
  stored = [[t.decode() for t in texts if t] for texts in _stored(built, "caption")]
  batch = next(feed)
  assert sorted(batch["video_id"].tolist()) == [0, 1, 2, 3]
  for vid, cid, ok, row in zip(batch["video_id"], batch["caption_id"], batch["caption_mask"], batch["caption"]):
    assert ok == bool(stored[vid]) and (feed.captions.texts[cid] == stored[vid][0] if ok else cid == -1)
    assert row[0] == max(cid, 0)  # the features of its own caption


def test_a_tfds_dataset_decoded_into_memory_keeps_its_captions(tmp_path):
  with tfds.testing.mock_data(num_examples=3, policy=tfds.testing.MockPolicy.USE_CODE):  # nothing on disk: decoded
    src = sources.open_source(_config(tmp_path))
    texts = src.split("train").captions()
  assert isinstance(src.split("train"), sources.MemorySplit) and len(texts) == 3
  assert all(len(t) <= 1 and all(isinstance(s, str) for s in t) for t in texts)
