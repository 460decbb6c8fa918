"""The generator end to end on tiny shapes: a generator run trained by the loop on a frozen encoder
run, `sora-jax generate` (files, seeds, interpolation, its one-line errors) and `sora-jax eval` of a
generator run with its MSE-decoder baseline."""

import json
import pathlib
import shutil

import jax
import numpy as np
import pytest
from PIL import Image

from sora_jax import cli
from sora_jax.apps.generate import get_generator
from sora_jax.config import load_config
from sora_jax.data import synthetic
from sora_jax.data.video_io import decode_video, encode_video
from sora_jax.errors import ConfigError
from sora_jax.training import checkpoint as ckpt, encoder_run
from sora_jax.training.loop import train


def _tiny(name, data_dir):
  c = load_config(name)
  c.data.name, c.data.data_dir, c.data.num_parallel_calls = "moving_shapes/small", data_dir, 2
  c.data.num_frames, c.data.frame_size = 4, 16
  c.model.width, c.model.hidden_size, c.model.head_hidden, c.model.embed_dim = 0.125, 16, 16, 8
  c.train.batch_size, c.train.num_steps, c.train.checkpoint_every, c.train.log_every = 16, 2, 1, 1
  c.train.quick_eval_every = 0
  c.optimizer.warmup_steps, c.optimizer.cooldown_steps = 1, 0
  c.eval.batch_size, c.eval.probe_steps, c.eval.max_examples = 32, 20, 64
  c.eval.probe_learning_rates, c.eval.probe_weight_decays = (0.1,), (0.0,)
  return c


def _generator_config(data_dir, encoder):
  g = _tiny("generate", data_dir)
  g.generate.encoder_workdir = encoder
  g.generate.width, g.generate.depth, g.generate.num_heads, g.generate.patch_size = 16, 1, 2, 4
  g.generate.sample_steps, g.generate.eval_examples = 3, 16
  g.generate.condition = "aligned"  # the video-text space: videos and sentences condition it
  g.generate.ema_decay = 0.995  # samples from the average of its weights (as the generate config does)
  return g


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
  data_dir = str(tmp_path_factory.getbasetemp() / "sora_data")  # conftest's data_dir
  encoder = str(tmp_path_factory.mktemp("encoder"))
  e = _tiny("text", data_dir)  # a video-text encoder (its text tower a small bag of words)
  e.text.tower, e.model.text_embed_dim, e.eval.baselines = "bag_of_words", 8, ()
  train(e, encoder)
  generator = str(tmp_path_factory.mktemp("generator"))
  train(_generator_config(data_dir, encoder), generator)
  queries = tmp_path_factory.mktemp("queries")
  for i in range(2):
    video = synthetic.render("moving_shapes", "test", i, num_frames=8, size=16)["video"]
    (queries / f"q{i}.mp4").write_bytes(encode_video(video))
  return {"data_dir": data_dir, "encoder": encoder, "generator": generator, "queries": queries}


@pytest.mark.slow
def test_generator_run_trains_on_its_frozen_encoder_and_records_it(runs):
  enc_config, enc_vars, _, enc_step = ckpt.load_run(runs["encoder"])
  config, variables, objective, step = ckpt.load_run(runs["generator"])
  assert step == 2 and enc_step == 2
  jax.tree_util.tree_map(np.testing.assert_array_equal, variables["params"], enc_vars["params"])  # frozen
  assert config.model.to_dict() == enc_config.model.to_dict()  # adopted
  assert config.generate.encoder_fingerprint.endswith("@2") and config.generate.encoder_step == 2
  _, _, before, _ = ckpt.load_run(runs["generator"], step=1)
  out_now, out_before = objective["generator"]["patch_out"]["kernel"], before["generator"]["patch_out"]["kernel"]
  assert np.abs(np.asarray(out_now) - np.asarray(out_before)).max() > 0  # the generator trains (from its output layer:
  # zero-initialised with the adaLN gates, it is what the first step moves)
  saved = json.loads((pathlib.Path(runs["generator"]) / "config.json").read_text())
  assert saved["generate"]["encoder_fingerprint"] == config.generate.encoder_fingerprint
  # The average that samples: after step 2 (update of step index 1, decay min(0.995, 2 / 11)),
  # ema_2 = d ema_1 + (1 - d) generator_2, leaf by leaf; the apps sample from it.
  d = 2 / 11
  jax.tree_util.tree_map(lambda e2, e1, g2: np.testing.assert_allclose(e2, d * e1 + (1 - d) * g2, rtol=1e-5, atol=1e-7),
                         objective["generator_ema"], before["generator_ema"], objective["generator"])
  assert not np.array_equal(objective["generator_ema"]["patch_out"]["kernel"], out_now)
  sampler = get_generator(runs["generator"]).sampler
  jax.tree_util.tree_map(np.testing.assert_array_equal, sampler.params, objective["generator_ema"])


def test_generator_refuses_another_encoder_and_other_clips(runs, tmp_path):
  g = _generator_config(runs["data_dir"], runs["encoder"])
  g.generate.encoder_step = 1  # the encoder run's other checkpoint: another encoder
  g.train.num_steps = 3
  with pytest.raises(ConfigError, match="never continues on another encoder"):
    train(g, runs["generator"])
  g = _generator_config(runs["data_dir"], runs["encoder"])
  g.data.frame_size = 8
  with pytest.raises(ConfigError, match=r"data.frame_size=8 does not match the encoder run's \(16"):
    train(g, str(tmp_path / "other"))
  g = _generator_config(runs["data_dir"], runs["generator"])
  with pytest.raises(ConfigError, match="is a generator run"):
    train(g, str(tmp_path / "other"))


def test_an_encoder_is_identified_by_its_config_as_written(runs, tmp_path):
  # An encoder trained before the schema gained a field (here: without model.vit_size in its saved
  # config) keeps its identity: the fingerprint hashes the config as written, not as this version
  # reads it (defaults filled in), so an upgrade does not refuse its generators.
  older = tmp_path / "older_encoder"
  shutil.copytree(runs["encoder"], older)
  meta = older / "checkpoints" / "2" / "config" / "metadata"
  saved = json.loads(meta.read_text())
  del saved["model"]["vit_size"]
  meta.write_text(json.dumps(saved))
  g = _generator_config(runs["data_dir"], str(older))
  adopted = encoder_run.adopt(g)
  assert adopted.model.vit_size == load_config("default").model.vit_size  # read with today's defaults
  assert adopted.generate.encoder_fingerprint == encoder_run.fingerprint(saved, 2)
  original = encoder_run.adopt(_generator_config(runs["data_dir"], runs["encoder"])).generate.encoder_fingerprint
  assert adopted.generate.encoder_fingerprint != original


def test_generate_cli_writes_clips_reproducibly(runs, tmp_path, capsys):
  q0, q1 = (str(runs["queries"] / f"q{i}.mp4") for i in range(2))
  args = ["generate", "--workdir", runs["generator"], "--like", q0, "--num", "2", "--seed", "3"]
  assert cli.main(args + ["--out", str(tmp_path / "a")]) == 0
  assert cli.main(args + ["--out", str(tmp_path / "b")]) == 0
  names = sorted(p.name for p in (tmp_path / "a").iterdir())
  assert names == ["like_000.mp4", "like_000.png", "like_001.mp4", "like_001.png"]
  frames = decode_video(tmp_path / "a" / "like_000.mp4")
  assert frames.shape == (4, 16, 16, 3)
  strip = Image.open(tmp_path / "a" / "like_000.png")
  assert strip.size == (4 * 64 + 3 * 2, 64)  # the 4 frames side by side
  for name in ("like_000.png", "like_001.png"):  # the same seed, the same clips
    assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()
  assert (tmp_path / "a" / "like_000.png").read_bytes() != (tmp_path / "a" / "like_001.png").read_bytes()
  assert cli.main(["generate", "--workdir", runs["generator"], "--like", q0, "--to", q1, "--steps", "3",
                   "--out", str(tmp_path / "path")]) == 0
  assert sorted(p.name for p in (tmp_path / "path").glob("*.mp4")) == ["step_000.mp4", "step_001.mp4", "step_002.mp4"]
  assert cli.main(["generate", "--workdir", runs["generator"], "--text", "a red square moves left", "--num", "1",
                   "--out", str(tmp_path / "text")]) == 0
  assert decode_video(tmp_path / "text" / "text_000.mp4").shape == (4, 16, 16, 3)
  assert cli.main(args + ["--solver", "heun", "--sample-steps", "3", "--out", str(tmp_path / "heun")]) == 0
  assert (tmp_path / "heun" / "like_000.png").read_bytes() != (tmp_path / "a" / "like_000.png").read_bytes()
  capsys.readouterr()


def test_sentences_need_a_generator_on_the_video_text_space(runs):
  from sora_jax.apps.generate import Generator
  gen = Generator(runs["generator"])
  assert gen.condition_of_text(["a red square", "a blue circle"]).shape == (2, 8)
  gen.config.generate.condition = "embedding"
  with pytest.raises(ConfigError, match="conditioned on video embeddings"):
    gen.condition_of_text(["a red square"])


@pytest.mark.parametrize("extra, message", [
    (["--num", "0"], "--num 0"),
    (["--out", "FILE"], "is a file; give a folder"),
    (["--like", "BAD"], "cannot decode"),
    (["--workdir", "ENCODER"], "is not a generator run"),
    (["--text", " ", "--like", None], "empty --text"),
    (["--to", "Q0", "--like", None], "--to interpolates from a --like video"),
    (["--solver", "rk4"], "--solver 'rk4': choose one of euler, heun"),
    (["--sample-steps", "0"], "--sample-steps 0"),
])
def test_generate_cli_errors_are_one_line(runs, tmp_path, capsys, extra, message):
  bad = tmp_path / "bad.mp4"
  bad.write_bytes(b"not a video")
  subst = {"FILE": str(bad), "BAD": str(bad), "ENCODER": runs["encoder"], "Q0": str(runs["queries"] / "q0.mp4")}
  args = {"--workdir": runs["generator"], "--like": str(runs["queries"] / "q0.mp4"), "--out": str(tmp_path / "o")}
  for flag, value in zip(extra[::2], extra[1::2]):
    args[flag] = subst.get(value, value)
  argv = ["generate"] + [x for k, v in args.items() if v is not None for x in (k, v)]
  assert cli.main(argv) == 1
  err = capsys.readouterr().err.strip()
  assert message in err and len(err.splitlines()) == 1, err


@pytest.mark.slow
def test_eval_of_a_generator_run_scores_it_against_the_mse_decoder(runs, capsys):
  assert cli.main(["eval", "--workdir", runs["generator"], "--baselines", "random"]) == 1
  assert "only baseline is generate_mse" in capsys.readouterr().err
  assert cli.main(["eval", "--workdir", runs["generator"], "--no-progress",
                   "--config.eval.generate_samplers=heun:1:2"]) == 0
  report = json.loads((pathlib.Path(runs["generator"]) / "eval" / "generation.json").read_text())
  heun = "flow (heun, guidance 1, 2 steps)"  # a sampler row on the same conditions
  raw = "flow (trained weights, no average)"  # the same sampler on the weights the average is of
  assert set(report["models"]) == {"flow", "mse", "flow (text)", raw, heun} and report["examples"] == 16
  assert report["models"][heun]["frechet"] != report["models"]["flow"]["frechet"]
  assert report["models"][raw]["frechet"] != report["models"]["flow"]["frechet"]
  flow, mse = report["models"]["flow"], report["models"]["mse"]
  assert mse["diversity_pixels"] == 0.0 and flow["diversity_pixels"] > 0  # one clip per condition vs many
  for row in (flow, mse, report["real"]):
    assert set(row["re_recognition"]) == {"appearance", "motion"} and row["frechet"] >= 0
  assert (pathlib.Path(runs["generator"]) / "baselines" / "generate_mse" / "checkpoints" / "2").is_dir()
  out = capsys.readouterr().out
  assert "generated: flow" in out and "generated: mse" in out and "generated: flow (text)" in out
  assert f"generated: {heun}" in out
  sheet = Image.open(pathlib.Path(runs["generator"]) / "eval" / "generation.png")
  assert sheet.size[0] == 4 * 16 and sheet.size[1] == 8 * (6 * 16 + 2)  # 8 conditions: real + 5 samples, a gap
