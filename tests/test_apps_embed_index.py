"""End to end: a tiny checkpoint, real video files (PyAV), `sora-jax embed|search|predict`."""

import json
import pathlib
import shutil

import numpy as np
import pytest

from sora_jax import cli
from sora_jax.errors import DataError


def _tiny_config(data_dir, num_classes=0):
  from sora_jax.config import load_config
  root = pathlib.Path(__file__).resolve().parents[1]
  c = load_config(root / "configs" / "infonce.py")
  c.data.name, c.data.data_dir, c.data.num_parallel_calls = "moving_shapes/small", data_dir, 2
  c.data.num_frames, c.data.frame_size = 4, 16
  c.model.width, c.model.hidden_size, c.model.head_hidden, c.model.embed_dim = 0.125, 16, 16, 8
  c.model.num_classes = num_classes
  c.train.batch_size, c.train.num_steps, c.train.checkpoint_every = 16, 2, 2
  c.train.quick_eval_every, c.train.log_every = 0, 1
  c.optimizer.warmup_steps = 1
  c.eval.num_clips = 2
  return c


def _init_only_run(workdir, config):
  """A step-0 checkpoint in the training stage's format (checkpoint.save of init_state): a model
  with a classifier head without a second training run."""
  import jax

  from sora_jax.training import checkpoint as ckpt
  from sora_jax.training.optim import build_optimizer
  from sora_jax.training.state import init_state
  state = jax.jit(lambda: init_state(config, build_optimizer(config)))()
  manager = ckpt.make_manager(workdir, async_save=False)
  ckpt.save(manager, 0, state, {}, config, force=True)
  manager.wait_until_finished()
  return str(workdir)


def _write_video(path, colour, direction, n=8, size=32):
  """An mpeg4 clip of a coloured square moving across a grey background."""
  import av
  with av.open(str(path), "w") as out:
    stream = out.add_stream("mpeg4", rate=8)
    stream.width = stream.height = size
    stream.pix_fmt = "yuv420p"
    for t in range(n):
      img = np.full((size, size, 3), 96, np.uint8)
      x = 2 + (t * 2 if direction > 0 else 16 - t * 2)
      img[8:20, x:x + 12] = colour
      for packet in stream.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
        out.mux(packet)
    for packet in stream.encode():
      out.mux(packet)


@pytest.fixture(scope="module")
def shared_data_dir(tmp_path_factory):
  return str(tmp_path_factory.getbasetemp() / "sora_data")  # the same folder as conftest's data_dir


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory, shared_data_dir):
  """Two training steps of a tiny encoder on built-in moving_shapes/small."""
  from sora_jax.training.loop import train  # (`sora_jax.training.train` per the contract, not exported yet)
  workdir = tmp_path_factory.mktemp("run")
  train(_tiny_config(shared_data_dir), str(workdir))
  return str(workdir)


@pytest.fixture(scope="module")
def videos(tmp_path_factory):
  root = tmp_path_factory.mktemp("videos")
  colours = {"red": (230, 30, 30), "green": (30, 200, 40), "blue": (40, 60, 230)}
  for name, colour in colours.items():
    (root / name).mkdir()
    for d in (1, -1):
      _write_video(root / name / f"{name}_{'r' if d > 0 else 'l'}.mp4", colour, d)
  return root


def test_embed_search_and_second_run_adds_only_new(run_dir, videos, tmp_path, capsys):
  import sora_jax.apps as apps
  from sora_jax.apps.index import Index
  later = tmp_path / "later"
  later.mkdir()
  shutil.move(str(videos / "blue"), str(later / "blue"))  # embedded on the second run
  (videos / "corrupt.mp4").write_bytes(b"\x00\x00\x00 ftypisom not really a video")
  try:
    out = tmp_path / "index"
    assert cli.main(["embed", "--workdir", run_dir, "--videos", str(videos), "--out", str(out), "--batch-size", "3",
                     "--no-progress"]) == 0
    idx = Index.load(out)
    assert idx.count == 4 and idx.step == 2 and idx.meta["workdir"] == run_dir and idx.meta["extra"]["num_clips"] == 2
    assert "failed: " in capsys.readouterr().out and not any("corrupt" in p for p in idx.paths)
    # Second run: the blue folder is back; only its two files are embedded.
    shutil.move(str(later / "blue"), str(videos / "blue"))
    report = apps.embed_videos(run_dir, str(videos), str(out), progress=False)
    assert (report.added, report.skipped, len(report.failed)) == (2, 4, 1)
    idx = Index.load(out)
    assert idx.count == 6 and len(set(idx.paths)) == 6
    assert {it["label_name"] for it in idx.items} == {"red", "green", "blue"}
    # Labels are stable across runs: the first run's classes keep their numbers, blue comes after.
    assert idx.meta["label_names"] == ["green", "red", "blue"]
    assert all(idx.meta["label_names"][it["label"]] == it["label_name"] for it in idx.items)
    # An indexed clip, given as a file to embed afresh, finds itself first (score ~1).
    query = str(videos / "green" / "green_l.mp4")
    assert cli.main(["search", "--index", str(out), "--query", query, "--k", "3",
                     "--html", str(tmp_path / "r.html")]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["rank", "score", "path", "label"]
    assert lines[1].split()[2] == query and float(lines[1].split()[1]) > 0.999
    page = (tmp_path / "r.html").read_text()
    assert page.count("data:image/png;base64,") == 4 and query in page
    # Through the Python API, by indexed path and by id: the same first hit.
    ix = apps.Index.load(out)
    assert apps.search_index(ix, query, k=2)[0][0]["path"] == query
    assert apps.search_index(ix, str(ix.items[ix.row_of(query)]["id"]), k=2)[0][0]["path"] == query
  finally:
    (videos / "corrupt.mp4").unlink(missing_ok=True)


def test_corrupt_query_file_is_a_clear_error(run_dir, videos, tmp_path, capsys):
  from sora_jax.apps.embed_index import embed_videos
  out = tmp_path / "index"
  embed_videos(run_dir, str(videos / "red"), str(out), progress=False)
  bad = tmp_path / "bad.mp4"
  bad.write_bytes(np.random.default_rng(0).bytes(2000))  # seeded, as every draw
  assert cli.main(["search", "--index", str(out), "--query", str(bad)]) == 1
  err = capsys.readouterr().err
  assert err.startswith("sora-jax: error:") and "bad.mp4" in err and "Traceback" not in err
  with pytest.raises(DataError, match="neither an id or path"):
    cli.main(["--debug", "search", "--index", str(out), "--query", str(tmp_path / "nope.mp4")])


def test_predict_knn_over_labelled_index_and_classifier_head(run_dir, videos, tmp_path, capsys, shared_data_dir):
  out = tmp_path / "index"
  assert cli.main(["embed", "--workdir", run_dir, "--videos", str(videos), "--out", str(out), "--no-progress"]) == 0
  capsys.readouterr()
  video = str(videos / "red" / "red_r.mp4")
  assert cli.main(["predict", "--workdir", run_dir, "--video", video, "--index", str(out), "--k", "1", "--json"]) == 0
  res = json.loads(capsys.readouterr().out)
  assert res["method"] == "knn" and res["probabilities"][0] == ["red", 1.0]  # its own row is the 1-NN
  # No classifier head and no index: a clear error.
  assert cli.main(["predict", "--workdir", run_dir, "--video", video]) == 1
  assert "--index" in capsys.readouterr().err
  head_run = _init_only_run(tmp_path / "head", _tiny_config(shared_data_dir, num_classes=5))
  assert cli.main(["predict", "--workdir", head_run, "--video", video, "--json", "--top", "9"]) == 0
  res = json.loads(capsys.readouterr().out)
  names, probs = zip(*res["probabilities"])
  assert res["method"] == "classifier" and abs(sum(probs) - 1) < 1e-5 and list(probs) == sorted(probs, reverse=True)
  assert sorted(names) == sorted(["square", "circle", "triangle", "cross", "diamond"])  # the dataset's names


@pytest.fixture(scope="module")
def text_run(tmp_path_factory, shared_data_dir):
  """An initialised (untrained) run with a text head: the plumbing, not the quality."""
  config = _tiny_config(shared_data_dir)
  config.objective.name, config.model.text_embed_dim = "infonce+video_text", 8
  return _init_only_run(tmp_path_factory.mktemp("text_run"), config)


def test_predict_zero_shot_from_class_names_and_its_bad_inputs(run_dir, text_run, videos, capsys):
  from sora_jax.apps.embed_index import get_embedder
  from sora_jax.models.text_encoder import load_text_tower
  video = str(videos / "red" / "red_r.mp4")
  assert cli.main(["predict", "--workdir", text_run, "--video", video, "--labels", "red, green,blue", "--template",
                   "a {} square", "--json"]) == 0
  res = json.loads(capsys.readouterr().out)
  names, probs = zip(*res["probabilities"])
  assert res["method"] == "zero-shot" and sorted(names) == ["blue", "green", "red"]
  # The same numbers by hand: cosine of the video's `aligned` vector to each prompt's projection, over T.
  embedder = get_embedder(text_run)
  params = embedder.objective_params
  text = load_text_tower().encode([f"a {n} square" for n in ("red", "green", "blue")])
  proj = text @ np.asarray(params["text_projection"]["kernel"]) + np.asarray(params["text_projection"]["bias"])
  proj /= np.linalg.norm(proj, axis=1, keepdims=True)
  logits = proj @ embedder.embed_file(video)["aligned"] / np.exp(float(params["video_text_log_temperature"]))
  want = np.exp(logits - logits.max()) / np.exp(logits - logits.max()).sum()
  np.testing.assert_allclose([dict(res["probabilities"])[n] for n in ("red", "green", "blue")], want, rtol=1e-4)
  for labels, template, words in [("red", "a {}", "at least two"), ("red,blue,red", "a {}", "'red' more than once"),
                                  ("red,,blue", "a {}", "empty name"), ("red,blue", "a video", "must contain")]:
    assert cli.main(["predict", "--workdir", text_run, "--video", video, "--labels", labels, "--template", template]) == 1
    assert words in capsys.readouterr().err
  assert cli.main(["predict", "--workdir", run_dir, "--video", video, "--labels", "red,blue"]) == 1
  assert "no text head" in capsys.readouterr().err


def test_search_by_text_ranks_the_text_aligned_rows_and_refuses_what_it_cannot_do(run_dir, text_run, videos, tmp_path,
                                                                                    capsys):
  from sora_jax.apps import Index, search_index
  from sora_jax.apps.search import text_vector
  out = tmp_path / "index"
  assert cli.main(["embed", "--workdir", text_run, "--videos", str(videos), "--out", str(out), "--no-progress"]) == 0
  index = Index.load(out)
  aligned = np.concatenate(index.shards("text"))
  assert index.text_dim == 8 and aligned.shape == (6, 8)
  np.testing.assert_allclose(np.linalg.norm(aligned, axis=1), 1.0, atol=1e-5)
  capsys.readouterr()
  assert cli.main(["search", "--index", str(out), "--text", "a red square moving right", "--k", "6", "--json"]) == 0
  res = json.loads(capsys.readouterr().out)
  assert res["query"] == "a red square moving right" and len(res["results"]) == 6
  assert set(res["results"][0]) == {"rank", "score", "id", "path", "label", "label_name"}
  want = aligned @ text_vector(index, "a red square moving right")  # cosine to every row, ranked
  assert [r["path"] for r in res["results"]] == [index.paths[i] for i in np.argsort(-want, kind="stable")]
  np.testing.assert_allclose([r["score"] for r in res["results"]], np.sort(want)[::-1], rtol=1e-4, atol=1e-5)
  assert search_index(index, text="a red square moving right", k=2)[0][0]["path"] == res["results"][0]["path"]
  html = tmp_path / "page.html"
  assert cli.main(["search", "--index", str(out), "--text", "a red square", "--html", str(html)]) == 0
  assert "text: a red square" in html.read_text()
  for argv, words in [(["--text", " "], "empty --text"), (["--text", "red", "--approx"], "searched exactly")]:
    assert cli.main(["search", "--index", str(out), *argv]) == 1
    assert words in capsys.readouterr().err
  with pytest.raises(SystemExit):  # argparse: one query, a video or a text
    cli.main(["search", "--index", str(out), "--text", "red", "--query", "1"])
  assert "not allowed with" in capsys.readouterr().err
  ds = tmp_path / "dataset_index"
  assert cli.main(["embed", "--workdir", text_run, "--videos", "dataset:", "--split", "test", "--out", str(ds),
                   "--no-progress"]) == 0
  ds_index = Index.load(ds)
  assert np.concatenate(ds_index.shards("text")).shape == (ds_index.count, 8) and ds_index.count == 64
  assert ds_index.items[0]["label_name"] in ("square", "circle", "triangle", "cross", "diamond")
  plain = tmp_path / "plain"
  assert cli.main(["embed", "--workdir", run_dir, "--videos", str(videos), "--out", str(plain), "--no-progress"]) == 0
  capsys.readouterr()
  assert cli.main(["search", "--index", str(plain), "--text", "a red square"]) == 1
  assert "no text-aligned embeddings" in capsys.readouterr().err


def test_embed_dataset_split_resumes_and_finds_itself(run_dir, tmp_path, capsys):
  from sora_jax.apps import Index, embed_videos
  out = str(tmp_path / "ds")
  report = embed_videos(run_dir, "dataset:", out, split="test", batch_size=16, progress=False)
  assert (report.added, report.skipped) == (64, 0)
  assert embed_videos(run_dir, "dataset:", out, split="test", progress=False).added == 0
  idx = Index.load(out)
  assert idx.count == 64 and len(set(idx.ids.tolist())) == 64 and (idx.labels >= 0).all()
  assert idx.items[0]["path"].startswith("dataset:moving_shapes/small:test/")
  some_id = str(idx.items[17]["id"])
  assert cli.main(["search", "--index", out, "--query", some_id, "--k", "2"]) == 0
  first = capsys.readouterr().out.splitlines()[1].split()
  assert first[2] == idx.items[17]["path"] and first[3] == idx.items[17]["label_name"]
  # Approximate (faiss IVF, cached in the index folder) finds the same first hit.
  assert cli.main(["search", "--index", out, "--query", some_id, "--k", "2", "--approx", "--nprobe", "4"]) == 0
  assert capsys.readouterr().out.splitlines()[1].split()[2] == idx.items[17]["path"]
  assert (tmp_path / "ds" / "ivf.faiss").is_file()


def test_rows_are_appended_every_flush_count_so_an_interrupted_run_keeps_them(run_dir, videos, tmp_path, capsys):
  from sora_jax.apps.index import Index
  out = tmp_path / "index"
  assert cli.main(["embed", "--workdir", run_dir, "--videos", str(videos), "--out", str(out), "--batch-size", "1",
                   "--flush-every", "2", "--no-progress"]) == 0
  idx = Index.load(out)
  assert idx.count == 6 and [s["count"] for s in idx.meta["shards"]] == [2, 2, 2]
  assert cli.main(["embed", "--workdir", run_dir, "--videos", str(videos), "--out", str(tmp_path / "x"),
                   "--flush-every", "0"]) == 1 and "--flush-every=0 must be >= 1" in capsys.readouterr().err


def test_a_model_giving_non_finite_embeddings_adds_nothing_and_lists_every_file(videos, tmp_path, capsys,
                                                                                shared_data_dir):
  import jax
  import jax.numpy as jnp

  from sora_jax.apps.index import Index
  from sora_jax.training import checkpoint as ckpt
  from sora_jax.training.optim import build_optimizer
  from sora_jax.training.state import init_state
  config = _tiny_config(shared_data_dir)
  state = jax.jit(lambda: init_state(config, build_optimizer(config)))()
  state = state.replace(params=jax.tree_util.tree_map(lambda x: x * jnp.nan, state.params))  # a diverged model
  manager = ckpt.make_manager(tmp_path / "run", async_save=False)
  ckpt.save(manager, 0, state, {}, config, force=True)
  manager.wait_until_finished()
  out = tmp_path / "index"
  assert cli.main(["embed", "--workdir", str(tmp_path / "run"), "--videos", str(videos), "--out", str(out),
                   "--no-progress"]) == 1
  printed = capsys.readouterr()
  assert printed.out.count("not finite") == 6 and Index.load(out).count == 0


def test_class_folders_are_numbered_as_prepare_numbers_them(tmp_path):
  """Integer class names in numeric order ("2" before "10"), others as text: the same rule for
  `embed` as for `prepare`, so a label means one class whichever built the data."""
  from sora_jax.apps.embed_index import list_videos
  from sora_jax.data.prepare import class_order
  for name in ("10", "2", "33"):
    (tmp_path / "n" / name).mkdir(parents=True)
    (tmp_path / "n" / name / "v.mp4").write_bytes(b"")
  recs = list_videos(tmp_path / "n")
  assert {r["label_name"]: r["label"] for r in recs} == {"2": 0, "10": 1, "33": 2}
  assert class_order(["b", "10", "a", "2"]) == ["10", "2", "a", "b"]  # not all integers: as text
