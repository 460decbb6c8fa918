"""Per-actor use: tracks files, `sora-jax eval` on an actors run (its per-actor table and classifiers),
`sora-jax predict --tracks`, and their errors."""

import json
import shutil

import jax
import numpy as np
import pytest

from sora_jax.data import actors
from sora_jax.data.tracks import parse_tracks
from sora_jax.errors import CheckpointError, DataError
from sora_jax.evaluation.actors import per_actor


def test_tracks_are_clipped_filled_from_the_nearest_frame_and_held_after_their_end():
  raw = [[[7, -4, 2, 10, 12], ["b", 20, 20, 30, 36]], [["b", 22, 20, 32, 36]], [], [[7, 2, 2, 12, 12]]]
  ids, boxes, notes = parse_tracks(raw, 6, 32, 32)
  assert ids == [7, "b"] and boxes.shape == (2, 6, 4)
  np.testing.assert_array_equal(boxes[0, 0], [0, 2, 10, 12])  # clipped to the frame
  np.testing.assert_array_equal(boxes[0, 1], boxes[0, 0])  # frame 1: nearest is frame 0
  np.testing.assert_array_equal(boxes[0, 2], boxes[0, 3])  # frame 2: equidistant, the earlier one ...
  np.testing.assert_array_equal(boxes[0, 3], [2, 2, 12, 12])
  np.testing.assert_array_equal(boxes[1, 2:], np.tile([22, 20, 32, 32], (4, 1)))  # held to the end, clipped
  assert any("clipped" in n for n in notes) and any("end at frame 4 of 6" in n for n in notes)
  assert parse_tracks({"frames": raw}, 4, 32, 32)[0] == ids


@pytest.mark.parametrize("raw, match", [
    ({"boxes": []}, "expected a JSON list"),
    ([[[1, 0, 0, 4]]], "each box is"),
    ([[[1, 0, 0, 4, "x"]]], "each box is"),
    ([[[1, 5, 0, 4, 4]]], "is empty"),
    ([[[1, 0, 0, 4, 4], [1, 1, 1, 4, 4]]], "twice"),
    ([[[1, 40, 40, 50, 50]]], "wholly outside"),
    ([[]] * 9, "9 frames but the video decodes to 8"),
    ([[], []], "names no actor"),
    ([[[None, 0, 0, 4, 4]]], "actor id"),
])
def test_bad_tracks_are_one_line_errors(raw, match):
  with pytest.raises(DataError, match=match):
    parse_tracks(raw, 8, 32, 32)


def test_per_actor_rows_are_the_present_actors_and_the_clip_vector_repeats():
  split = {"pooled": np.arange(6.0).reshape(3, 2), "actor_pooled": np.arange(24.0).reshape(3, 4, 2),
           "actor_mask": np.array([[1, 1, 0, 0], [1, 0, 0, 0], [1, 1, 1, 0]], bool),
           "actor_label": np.array([[0, 1, -1, -1], [2, -1, -1, -1], [3, 4, 0, -1]]),
           "actor_motion": np.array([[1, 2, -1, -1], [0, -1, -1, -1], [3, 3, 1, -1]]), "video_id": np.array([5, 6, 7])}
  own = per_actor(split, "actor_pooled")
  np.testing.assert_array_equal(own["label"], [0, 1, 2, 3, 4, 0])
  np.testing.assert_array_equal(own["actor_pooled"][2], split["actor_pooled"][1, 0])
  clip = per_actor(split, "pooled")
  np.testing.assert_array_equal(clip["pooled"], split["pooled"][[0, 0, 1, 2, 2, 2]])
  np.testing.assert_array_equal(clip["video_id"], [5, 5, 6, 7, 7, 7])
  assert per_actor({"pooled": split["pooled"]}, "pooled") is None


def _write_mp4(path, video):
  import av
  with av.open(str(path), "w") as out:
    stream = out.add_stream("mpeg4", rate=8)
    stream.width, stream.height, stream.pix_fmt = video.shape[2], video.shape[1], "yuv420p"
    for frame in video:
      for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
        out.mux(packet)
    for packet in stream.encode():
      out.mux(packet)


@pytest.mark.slow
def test_eval_reports_per_actor_figures_and_predict_tracks_names_each_actors_action_and_shape(tmp_path, data_dir, capsys):
  """A 2-step `actors` run on moving_actors/small at 16 px resumes exactly (from its step-1 checkpoint:
  the same numbers as straight); `sora-jax eval` prints and writes the per-actor table and the
  per-actor classifiers; `sora-jax predict --tracks` reads them."""
  from sora_jax import cli
  from sora_jax.apps.actors import load_classifier
  from sora_jax.config import load_config
  from sora_jax.training.loop import train
  root = tmp_path
  config = load_config("actors", [
      "data.name=moving_actors/small", f"data.data_dir={data_dir}",
      "data.num_frames=4", "data.frame_size=16", "data.num_parallel_calls=2", "model.width=0.125",
      "model.actor_predict_steps=2", "model.hidden_size=16", "model.head_hidden=16", "model.embed_dim=16", "train.batch_size=8",
      "train.num_steps=2", "train.checkpoint_every=1", "train.quick_eval_every=0", "optimizer.warmup_steps=1",
      "mesh.data=2", "eval.probe_steps=30", "eval.finetune_epochs=0", "eval.baselines=()", "eval.max_examples=64"])
  workdir = root / "run"
  straight = jax.device_get(train(config, workdir).params)
  shutil.copytree(workdir / "checkpoints" / "1", root / "resumed" / "checkpoints" / "1")  # as if stopped there
  resumed = jax.device_get(train(config, root / "resumed").params)
  for a, b in zip(jax.tree_util.tree_leaves(straight), jax.tree_util.tree_leaves(resumed)):
    np.testing.assert_array_equal(a, b)
  assert "actors" in straight["encoder"]
  assert cli.main(["eval", "--workdir", str(workdir), "--no-progress", "--config.eval.knn_k=5"]) == 0
  printed = capsys.readouterr().out
  assert "per actor" in printed and "clip embedding, repeated per actor" in printed
  report = json.loads((workdir / "eval" / "report.json").read_text())
  figs = report["models"]["ssl"]["actors"]
  for source in ("actor", "clip"):
    for what in ("motion", "shape"):
      assert 0.0 <= figs[source][what]["linear"] <= 1.0 and 0.0 <= figs[source][what]["knn"] <= 1.0
  assert "## Per actor" in (workdir / "eval" / "report.md").read_text()
  with np.load(workdir / "eval" / "actor_classifier.npz", allow_pickle=False) as f:
    assert list(f["motion_names"]) == list(actors.MOTIONS) and f["motion_w"].shape[1] == 4
    assert f["motion_w"].shape[0] > 16  # the track's 16 temporal features, then its look
    assert str(f["feature"]) == "actor_pooled" and f["shape_w"].shape[1] == 5

  ex = actors.render("test", 3)
  _write_mp4(tmp_path / "v.mp4", ex["video"])
  n = ex["num_actors"]
  tracks = [[[f"actor{a}", *map(float, ex["boxes"][a, t])] for a in range(n)] for t in range(16)]
  (tmp_path / "t.json").write_text(json.dumps(tracks))
  assert cli.main(["predict", "--workdir", str(workdir), "--video", str(tmp_path / "v.mp4"),
                   "--tracks", str(tmp_path / "t.json"), "--json", "--top", "2"]) == 0
  out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
  assert [a["id"] for a in out["actors"]] == [f"actor{a}" for a in range(n)]
  for a in out["actors"]:
    assert len(a["motion"]) == 2 and a["motion"][0][0] in actors.MOTIONS and a["motion"][0][1] >= a["motion"][1][1]
    assert a["shape"][0][0] in ("square", "circle", "triangle", "cross", "diamond")
  (tmp_path / "bad.json").write_text("[[1, 2")
  assert cli.main(["predict", "--workdir", str(workdir), "--video", str(tmp_path / "v.mp4"),
                   "--tracks", str(tmp_path / "bad.json")]) != 0
  assert "is not JSON" in capsys.readouterr().err
  with pytest.raises(CheckpointError, match="run `sora-jax eval"):
    load_classifier(tmp_path)
  _embed_writes_a_row_per_actor(workdir, tmp_path, data_dir, capsys)


def _embed_writes_a_row_per_actor(workdir, tmp_path, data_dir, capsys):
  """`embed` of an actors run writes one row per actor to OUT/actors beside the clip rows: from a dataset
  with tracks (labelled with each actor's action) and from a manifest's tracks column (a bad tracks
  file: its one-line error, no actor rows, the clip row kept); an actor row finds itself first."""
  from sora_jax import cli
  from sora_jax.apps import Index, actor_index_dir, search_index
  from sora_jax.data import synthetic
  out = tmp_path / "index"
  assert cli.main(["embed", "--workdir", str(workdir), "--videos", "dataset:moving_actors/small", "--out", str(out),
                   "--no-progress"]) == 0
  assert " actors (added " in capsys.readouterr().out
  clips, rows = Index.load(out), Index.load(actor_index_dir(out))
  test = [actors.render("test", i) for i in range(64)]
  assert clips.count == 64 and rows.count == sum(int(ex["num_actors"]) for ex in test)
  for item in rows.items[:12]:  # dataset:NAME:test/<video id>/actor<a>, labelled with that actor's action
    vid, a = item["path"].rsplit("/", 2)[-2:]
    ex = test[int(vid) % synthetic.SPLIT_STRIDE]
    assert item["label_name"] == actors.MOTIONS[int(ex["actor_motion"][int(a[len("actor"):])])]
  hits = search_index(rows, rows.items[5]["path"], k=3)[0]
  assert hits[0]["path"] == rows.items[5]["path"] and hits[0]["score"] > 0.999
  assert cli.main(["embed", "--workdir", str(workdir), "--videos", "dataset:moving_actors/small", "--out", str(out),
                   "--no-progress"]) == 0  # again: nothing new
  assert Index.load(actor_index_dir(out)).count == rows.count
  manifest = tmp_path / "m.jsonl"
  manifest.write_text(json.dumps({"path": "v.mp4", "tracks": "t.json"}) + "\n"
                      + json.dumps({"path": "w.mp4", "tracks": "bad.json"}) + "\n")
  shutil.copy(tmp_path / "v.mp4", tmp_path / "w.mp4")
  files = tmp_path / "files"
  assert cli.main(["embed", "--workdir", str(workdir), "--videos", str(manifest), "--out", str(files)]) == 0
  assert "is not JSON" in capsys.readouterr().err
  assert Index.load(files).count == 2  # both clips
  ids = json.loads((tmp_path / "t.json").read_text())[0]
  assert Index.load(actor_index_dir(files)).paths == [f"{tmp_path / 'v.mp4'}#{actor[0]}" for actor in ids]


def _moving_rectangle(path, n=12, height=48, width=64):
  """A white 12x10 rectangle moving right 3 px a frame; -> its boxes [n, 4] in pixels."""
  video = np.zeros((n, height, width, 3), np.uint8)
  boxes = []
  for t in range(n):
    x0, y0 = 4 + 3 * t, 20
    video[t, y0:y0 + 10, x0:x0 + 12] = 255
    boxes.append([x0, y0, x0 + 12, y0 + 10])
  _write_mp4(path, video)
  return np.array(boxes, np.float32)


def test_prepare_carries_manifest_tracks_through_frame_rate_and_resize_and_reports_bad_ones(tmp_path, capsys):
  from sora_jax import cli
  from sora_jax.config import load_config
  from sora_jax.data import pipeline
  rows = []
  for name in ("a", "b", "c", "d"):
    boxes = _moving_rectangle(tmp_path / f"{name}.mp4")
    frames = [[["runner", *map(float, b)]] for b in boxes]
    if name == "b":
      frames = frames[:8]  # ends early: the last box is held
    if name == "c":
      frames[3] = [["runner", 100.0, 100.0, 120.0, 110.0]]  # wholly outside: the video is skipped
    (tmp_path / f"{name}.json").write_text(json.dumps(frames))
    rows.append({"path": f"{name}.mp4", "tracks": f"{name}.json", "split": "train" if name == "b" else "test"})
  rows.append({"path": "a.mp4", "split": "train"})  # (a duplicate: left out)
  manifest = tmp_path / "videos.jsonl"
  manifest.write_text("\n".join(json.dumps(r) for r in rows))
  assert cli.main(["prepare", str(manifest), str(tmp_path / "out"), "--short-side", "32", "--fps", "4",
                   "--no-progress"]) == 0
  printed = capsys.readouterr().out
  assert "prepared 3 of 4 videos" in printed and "wholly outside" in printed and "nearest box in time" in printed
  assert "up to 1 actors per video" in printed
  config = load_config("actors", [f"data.name=tfrecord:{tmp_path / 'out'}", "data.num_frames=4", "data.frame_size=32",
                                  "data.eval_split=test"])
  batch = next(iter(pipeline.eval_batches(config, "test", batch_size=2)))
  assert batch["boxes"].shape == (2, 1, 1, 4, 4) and batch["actor_mask"].all()
  for row in range(2):  # a and d (whole tracks): each box is where the rectangle is
    for t in range(4):
      frame = batch["video"][row, 0, t]
      ys, xs = np.nonzero(frame[..., 0] > 127)
      want = np.array([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]) / 32
      np.testing.assert_allclose(batch["boxes"][row, 0, 0, t], want, atol=1.6 / 32)


def test_the_actor_objective_on_data_without_tracks_is_a_one_line_error(data_dir):
  from sora_jax.config import load_config
  from sora_jax.data.pipeline import TrainInput
  config = load_config("actors", ["data.name=moving_shapes/small", f"data.data_dir={data_dir}"])
  with pytest.raises(DataError, match="has no actor tracks; train on moving_actors"):
    TrainInput(config)
