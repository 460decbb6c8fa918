"""The whole eval on a tiny trained run: a checkpoint written on 2 devices, evaluated on 8; errors."""

import json
import pathlib
import subprocess
import sys

import numpy as np
import pytest
from test_eval_features import tiny_config

from sora_jax.errors import CheckpointError, ConfigError, DataError


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
  """A 1-step run on moving_shapes/small, written by a 2-device mesh (the tests see 8 devices)."""
  from sora_jax.training.loop import train
  root = tmp_path_factory.mktemp("eval_run")
  c = tiny_config()
  c.data.data_dir = str(tmp_path_factory.getbasetemp() / "sora_data")
  c.train.batch_size, c.train.num_steps, c.train.checkpoint_every, c.train.log_every = 8, 1, 1, 1
  c.train.quick_eval_every = 0
  c.optimizer.warmup_steps = 1
  c.mesh.data = 2
  c.eval.probe_steps = 50
  c.eval.finetune_epochs = 0
  c.eval.max_examples = 96
  c.eval.baselines = ("random",)
  c.eval.num_clips = 2  # clip averaging
  c.eval.batch_size = 20  # 64 test clips: a padded last batch, and 20 rows padded to 24 for 8 devices
  train(c, root / "run")
  return c, root / "run"


@pytest.fixture(scope="module")
def evaluated(trained):
  """`sora-jax eval` of the tiny run (16 px clips) with the random and i3d_kinetics (at 24 px) baselines
  -> (config, workdir, printed)."""
  import contextlib
  import io

  from sora_jax import cli
  printed = io.StringIO()
  with contextlib.redirect_stdout(printed):
    assert cli.main(["eval", "--workdir", str(trained[1]), "--no-progress", "--config.eval.knn_k=5",
                     "--config.eval.i3d_frame_size=24", "--baselines", "random,i3d_kinetics"]) == 0
  return (*trained, printed.getvalue())


@pytest.mark.slow
def test_eval_report_from_other_mesh(evaluated):
  import jax

  from sora_jax.evaluation import run
  from sora_jax.training.checkpoint import load_for_inference
  config, workdir, table = evaluated
  assert jax.device_count() == 8 and config.mesh.data == 2
  with pytest.raises(ConfigError, match="only --config.eval"):
    run.evaluate(workdir, progress=False, overrides=("model.width=2",))
  out = workdir / "eval"
  rep = json.loads((out / "report.json").read_text())
  assert rep["checkpoint_step"] == 1 and rep["config"]["mesh"]["data"] == 2 and rep["config"]["eval"]["knn_k"] == 5
  assert set(rep["models"]) == {"ssl", "random", "i3d_kinetics"}
  for figs in rep["models"].values():
    for section in ("appearance", "motion", "shuffled_appearance", "shuffled_motion"):
      assert 0.0 <= figs[section]["linear"] <= 1.0 and 0.0 <= figs[section]["knn"] <= 1.0
    r = [figs["appearance"][f"R@{k}"] for k in (1, 5, 10, 20)]
    assert r == sorted(r)  # recall grows with k
  # kNN and R@k of the run, written out from the stored features: test clips query train + validation.
  from sora_jax.evaluation import features as stored_embeddings
  emb = {s: stored_embeddings.load(out / "embeddings" / "ssl" / s) for s in ("train", "validation", "test")}
  unit = lambda x: x.astype(np.float64) / np.linalg.norm(x.astype(np.float64), axis=1, keepdims=True)
  bank = unit(np.concatenate([emb["train"]["pooled"], emb["validation"]["pooled"]]))
  bank_y = np.concatenate([emb["train"]["label"], emb["validation"]["label"]])
  sim = unit(emb["test"]["pooled"]) @ bank.T
  order = np.argsort(-sim, axis=1)
  votes = np.zeros((len(sim), bank_y.max() + 1))
  for i, row in enumerate(order[:, :5]):
    np.add.at(votes[i], bank_y[row], np.exp((sim[i, row] - 1) / config.eval.knn_temperature))
  ssl = rep["models"]["ssl"]["appearance"]
  assert ssl["knn"] == pytest.approx(np.mean(votes.argmax(1) == emb["test"]["label"]))
  for k in (1, 5):
    assert ssl[f"R@{k}"] == pytest.approx(np.mean((bank_y[order[:, :k]] == emb["test"]["label"][:, None]).any(1)))
  # The linear figure, written out: the chosen (lr, wd) scored on validation when fitted on train,
  # then refitted on train + validation and scored on test, on the run's feature.
  from sora_jax.evaluation import probes
  feat, proto, e = config.eval.feature, ssl["linear_protocol"], config.eval
  fit = lambda parts: probes.fit_linear(np.concatenate([emb[p][feat] for p in parts]),
                                        np.concatenate([emb[p]["label"] for p in parts]), int(bank_y.max()) + 1,
                                        [proto["learning_rate"]], [proto["weight_decay"]], steps=e.probe_steps)
  accuracy = lambda wb, split: np.mean(probes.linear_predict(wb[0][0], wb[1][0], emb[split][feat]) == emb[split]["label"])
  assert proto["val_accuracy"] == pytest.approx(accuracy(fit(["train"]), "validation"))
  assert ssl["linear"] == pytest.approx(accuracy(fit(["train", "validation"]), "test"))
  assert (proto["learning_rate"], proto["weight_decay"]) in [(lr, wd) for lr in e.probe_learning_rates
                                                             for wd in e.probe_weight_decays]
  for name in ("report.md", "projection.png", "retrieval_gallery.png", "training_curves.png"):
    assert (out / name).stat().st_size > 0
  assert "self-supervised (step 1)" in table and "random init" in table and "I3D Kinetics-400" in table
  # The embeddings on disk are the checkpoint's: re-embedding a few test clips directly agrees.
  from sora_jax.data import pipeline
  from sora_jax.evaluation import features
  from sora_jax.models import build_encoder
  cfg, variables, _ = load_for_inference(workdir)
  stored = features.load(out / "embeddings" / "ssl" / "test")
  assert len(stored["video_id"]) == 64 and (stored["label"] >= 0).all()
  batch = next(pipeline.eval_batches(cfg, "test", batch_size=4, num_clips=2))
  apply = jax.jit(build_encoder(cfg).apply)
  per_clip = [np.array(apply(variables, batch["video"][:, i])["pooled"]) for i in range(2)]
  mean = sum(p / np.linalg.norm(p, axis=-1, keepdims=True) for p in per_clip) / 2
  assert not np.allclose(per_clip[0], per_clip[1])  # two different clips were averaged
  np.testing.assert_array_equal(stored["video_id"][:4], batch["video_id"])
  np.testing.assert_allclose(stored["pooled"][:4], mean, atol=2e-5)


def test_quick_eval_hook(trained):
  from sora_jax.evaluation.quick import make_quick_eval
  from sora_jax.training.checkpoint import load_for_inference
  config, workdir = trained
  _, variables, _ = load_for_inference(workdir)
  hook = make_quick_eval(config, num_examples=24)
  acc = hook(1, variables)["knn_accuracy"]
  assert acc == hook(2, variables)["knn_accuracy"]  # deterministic
  assert acc == pytest.approx(_knn_written_out(config, variables, 24))
  # The loop prints every hook's figures by name, not one it knows of.
  import types

  from sora_jax.training import loop
  written = []
  state = types.SimpleNamespace(inference_variables=lambda: variables)
  record = loop._run_hooks([hook, lambda step, v: {"other_figure": 0.25}], 3, state,
                           types.SimpleNamespace(write=written.append))
  assert record == {"knn_accuracy": acc, "other_figure": 0.25}
  assert written == [f"step 3: knn_accuracy {acc:.3f}, other_figure 0.250"]


def _knn_written_out(config, variables, n):
  """The quick eval's figure from first principles: the first n clips of each split, the model's
  pooled features in float64, each of the k nearest bank clips voting exp((cos - 1) / T)."""
  import jax

  from sora_jax.data import pipeline
  from sora_jax.models import build_encoder
  apply = jax.jit(lambda v, x: build_encoder(config).apply(v, x)["pooled"])

  def clips(split):
    videos, labels = [], []
    for b in pipeline.eval_batches(config, split, batch_size=8, num_clips=1, num_crops=1):
      keep = np.asarray(b["mask"], bool)
      videos.append(np.asarray(b["video"])[keep][:, 0])
      labels.append(np.asarray(b["label"])[keep])
    return np.concatenate(videos)[:n], np.concatenate(labels)[:n]

  def unit(v):
    f = np.asarray(apply(variables, v), np.float64)
    return f / np.linalg.norm(f, axis=1, keepdims=True)

  (bank, bank_y), (query, query_y) = clips(config.data.train_split), clips(config.data.eval_split)
  sim = unit(query) @ unit(bank).T
  votes = np.zeros((len(query), bank_y.max() + 1))
  for i, row in enumerate(np.argsort(-sim, axis=1)[:, :config.eval.knn_k]):
    for j in row:
      votes[i, bank_y[j]] += np.exp((sim[i, j] - 1) / config.eval.knn_temperature)
  return float(np.mean(votes.argmax(axis=1) == query_y))


def test_missing_checkpoint_and_empty_split(tmp_path, trained):
  from sora_jax.evaluation import features, run
  with pytest.raises(CheckpointError, match=str(tmp_path / "nothing")):
    run.evaluate(tmp_path / "nothing", progress=False)
  # A prepared dataset whose test split holds no videos.
  root = tmp_path / "prepared"
  root.mkdir()
  (root / "dataset_info.json").write_text(json.dumps({"classes": ["a", "b"], "splits": {
      "train": {"num_examples": 0, "shards": []}, "test": {"num_examples": 0, "shards": []}}}))
  config = tiny_config()
  config.data.name = f"tfrecord:{root}"
  with pytest.raises(DataError, match="empty"):
    features.extract(config, {}, "test", tmp_path / "emb", progress=False)
  config.data.name = trained[0].data.name
  config.data.data_dir = trained[0].data.data_dir
  with pytest.raises(DataError, match="no split 'nope'"):
    features.extract(config, {}, "nope", tmp_path / "emb", progress=False)


def test_an_unknown_config_field_in_train_py_is_one_line(tmp_path):
  # train.py is the same command line as `sora-jax train`
  out = subprocess.run([sys.executable, str(pathlib.Path(__file__).parents[1] / "train.py"), "--config", "infonce",
                        "--workdir", str(tmp_path / "new"), "--config.train.foo=1"], capture_output=True, text=True)
  assert out.returncode == 1 and "Traceback" not in out.stderr
  assert out.stderr.strip().splitlines()[-1].startswith("sora-jax: error: unknown config field 'train.foo'")
  assert not (tmp_path / "new").exists()  # nothing left behind


def test_train_flags_are_kebab_case_and_the_old_spellings_still_read(capsys):
  from sora_jax.cli import build_parser
  parser = build_parser("train")
  new = parser.parse_args(["train", "--workdir", "w", "--coordinator-address", "h:1", "--num-processes", "2",
                           "--process-id", "1", "--no-quick-eval"])
  old = parser.parse_args(["train", "--workdir", "w", "--coordinator_address", "h:1", "--num_processes", "2",
                           "--process_id", "1", "--no_quick_eval"])
  assert vars(new) == vars(old)
  assert (new.coordinator_address, new.num_processes, new.process_id, new.no_quick_eval) == ("h:1", 2, 1, True)
  defaults = parser.parse_args(["train", "--workdir", "w"])
  assert (defaults.coordinator_address, defaults.num_processes, defaults.no_quick_eval) == (None, None, False)
  with pytest.raises(SystemExit):
    parser.parse_args(["train", "--help"])
  text = capsys.readouterr().out
  assert "--no-quick-eval" in text and "--no_quick_eval" not in text  # the old spellings are not listed


def test_the_i3d_kinetics_baseline_embeds_the_run_clips_with_i3d_and_reports_its_cost(evaluated):
  import jax

  from sora_jax.data import pipeline
  from sora_jax.evaluation import features
  from sora_jax.models import i3d
  config, workdir, _ = evaluated
  rep = json.loads((workdir / "eval" / "report.json").read_text())
  figs = rep["models"]["i3d_kinetics"]
  assert figs["title"] == "I3D Kinetics-400 (supervised, frozen)" and 0.0 <= figs["appearance"]["knn"] <= 1.0
  cost, ssl_cost = figs["cost"], rep["models"]["ssl"]["cost"]
  assert cost["gflops_per_clip"] > 10 * ssl_cost["gflops_per_clip"] > 0 and cost["ms_per_clip"] > 0
  from sora_jax.models.summary import summary_rows  # the encoder unrolled over time (a scan body counts once)
  unrolled = summary_rows(config, module_flops=False)[1]["flops_per_clip"]
  # (measured: 1.8719 MFLOPs lowered against the summary's 1.8744 compiled; the LSTM not unrolled gives 1.8649)
  assert ssl_cost["gflops_per_clip"] * 1e9 == pytest.approx(unrolled, rel=2.5e-3)
  assert "GFLOPs/clip" in (workdir / "eval" / "report.md").read_text()
  # What is stored is I3D's pooled Mixed_5c of the clips resized (bilinear) to eval.i3d_frame_size,
  # L2-normalised per clip and averaged.
  stored = features.load(workdir / "eval" / "embeddings" / "i3d_kinetics" / "test")
  batch = next(pipeline.eval_batches(config, "test", batch_size=4, num_clips=2))
  kinetics, model = i3d.load_kinetics(), i3d.InceptionI3D()
  resized = lambda x: jax.image.resize(x.astype(np.float32), x.shape[:2] + (24, 24, 3), "bilinear")
  per_clip = [np.asarray(jax.jit(lambda v, x: i3d.features(model, v, resized(x)))(kinetics, batch["video"][:, i]))
              for i in range(2)]
  mean = sum(p / np.linalg.norm(p, axis=-1, keepdims=True) for p in per_clip) / 2
  np.testing.assert_array_equal(stored["video_id"][:4], batch["video_id"])
  np.testing.assert_allclose(stored["pooled"][:4], mean, atol=2e-5)
  meta = features.read_meta(workdir / "eval" / "embeddings" / "i3d_kinetics" / "test")
  assert config.data.frame_size == 16 and meta["fingerprint"]["i3d_size"] == 24 and meta["clips"] == 2 * meta["count"]
