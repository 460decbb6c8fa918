"""The config schema: defaults, named configs, the one override syntax, migration of saved configs,
the reference table, and an installed (non-editable) package that finds its configs by name."""

import json
import os
import pathlib
import shutil
import subprocess
import sys

import pytest

from sora_jax import cli
from sora_jax.config import (FIELDS, apply_overrides, defaults, load_config, migrate, named_configs, reference,
                             to_dict, validate)
from sora_jax.errors import ConfigError

ROOT = pathlib.Path(__file__).resolve().parents[1]


def test_every_field_is_declared_once_with_a_doc_and_a_check_that_accepts_its_default():
  names = [f.name for f in FIELDS]
  assert len(names) == len(set(names))
  for f in FIELDS:
    assert f.doc and callable(f.check), f.name
    f.check(f.name, f.default)
  flat = _flatten(defaults().to_dict())
  assert sorted(flat) == sorted(names)  # defaults() holds exactly the schema's fields


def test_named_configs_ship_with_the_package_and_match_their_files():
  assert {"default", "infonce", "dpc", "seed", "supervised", "large"} <= set(named_configs())
  needs = {"generate": ["generate.encoder_workdir=runs/default"]}  # what a named config cannot know
  for name in named_configs():
    by_name = validate(load_config(name, needs.get(name, [])))
    by_file = load_config(ROOT / "configs" / f"{name}.py", needs.get(name, []))
    assert by_name.to_dict() == by_file.to_dict(), name
  assert load_config("infonce").to_dict() == defaults().to_dict()
  default, infonce = load_config("default").model.to_dict(), defaults().model.to_dict()
  assert {k: v for k, v in default.items() if infonce[k] != v} == {
      "frame_input": "two_tower", "embed_dim": 128, "time_reversal": True}  # and nothing outside model
  assert {k: v for k, v in load_config("default").to_dict().items() if k != "model"} == {
      k: v for k, v in defaults().to_dict().items() if k != "model"}
  with pytest.raises(ConfigError, match="named configs: .*default"):
    load_config("no_such_config")


def test_overrides_parse_as_the_declared_type():
  c = apply_overrides(defaults(), ["train.num_steps=7", "config.optimizer.learning_rate=1", "model.causal=true",
                                   "eval.retrieval_ks=1,5", "data.augment.crop_scale=(0.5, 0.9)",
                                   "eval.baselines=random"])
  assert c.train.num_steps == 7 and isinstance(c.optimizer.learning_rate, float) and c.model.causal is True
  assert c.eval.retrieval_ks == (1, 5) and c.data.augment.crop_scale == (0.5, 0.9)
  assert c.eval.baselines == ("random",)
  validate(c)
  typo = defaults()
  typo.train.nm_steps = 5  # a misspelt field in a config file
  with pytest.raises(ConfigError, match="unknown config field 'train.nm_steps'"):
    validate(typo)
  for bad, words in [("train.num_stepz=3", "unknown config field 'train.num_stepz'"),
                     ("trian.num_steps=3", "no section 'trian'"),
                     ("train.num_steps=many", "cannot parse 'many' as int"),
                     ("train.num_steps", "--config.section.field=value")]:
    with pytest.raises(ConfigError, match=words):
      apply_overrides(defaults(), [bad])


def test_command_line_takes_config_overrides_in_both_forms():
  rest, overrides = cli.split_overrides(["train", "--config", "dpc", "--config.train.num_steps=3",
                                         "--config.data.num_frames", "6", "--workdir", "w"])
  assert rest == ["train", "--config", "dpc", "--workdir", "w"]
  assert overrides == ["train.num_steps=3", "data.num_frames=6"]


def test_commands_import_tensorflow_without_keras_and_keep_a_value_the_user_set(monkeypatch):
  """`cli.set_environment` (what every command runs first) keeps Keras and scikit-learn out of
  `import tensorflow`, which tf.data does not need; a value already in the environment stays."""
  code = ("import sys; from sora_jax.cli import set_environment; set_environment(); import tensorflow as tf; "
          "total = tf.data.Dataset.range(4).reduce(tf.constant(0, tf.int64), lambda a, b: a + b); "
          "print('LOADED', [m for m in ('keras', 'sklearn') if m in sys.modules], int(total))")
  env = {k: v for k, v in os.environ.items() if k != "TF_USE_LEGACY_KERAS"}
  proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
  assert "LOADED [] 6" in proc.stdout, (proc.stdout + proc.stderr)[-2000:]
  monkeypatch.setenv("TF_USE_LEGACY_KERAS", "0")
  cli.set_environment()
  assert os.environ["TF_USE_LEGACY_KERAS"] == "0"


def test_config_command_shows_every_field_and_rejects_bad_values(capsys):
  assert cli.main(["config", "--list"]) == 0
  assert "large" in capsys.readouterr().out.split()
  assert cli.main(["config", "--show", "dpc", "--config.train.num_steps=5"]) == 0
  rows = [line for line in capsys.readouterr().out.splitlines() if line.startswith("| `")]
  assert len(rows) == len(FIELDS)
  assert any(r.startswith("| `objective.name` | `'predictive'` |") for r in rows)  # dpc's value
  assert any(r.startswith("| `train.num_steps` | `5` |") for r in rows)
  assert all(r.count(" | ") == 3 for r in rows)  # doc's own '|' escaped: 4 cells a row
  assert cli.main(["config", "--show", "default", "--config.model.temporal=mamba"]) == 1
  err = capsys.readouterr().err.strip()
  assert len(err.splitlines()) == 1 and "config.model.temporal='mamba' is not supported" in err
  assert cli.main(["embed", "--workdir", "w", "--videos", "v", "--out", "o", "--config.eval.knn_k=3"]) == 1
  assert "takes no --config.FIELD overrides" in capsys.readouterr().err
  assert "| `seed` | `0` |" in reference()


def test_migrate_fills_new_fields_keeps_old_behaviour_and_drops_removed_ones():
  saved = to_dict(load_config("seed"))
  del saved["model"]["frame_input"], saved["model"]["frame_pool"], saved["data"]["sampling"]
  del saved["eval"]["finetune_epochs"], saved["data"]["augment"]["color_jitter"]
  del saved["text"]["learning_rate_scale"], saved["objective"]["ema_momentum"], saved["generate"]["layout_rank"]
  saved["train"]["an_old_field"] = 3
  saved = json.loads(json.dumps(saved))  # as read back from a checkpoint: tuples are lists
  c = validate(migrate(saved))
  assert c.model.frame_input == "rgb" and c.data.augment.color_jitter == ()  # what these runs were trained with
  assert c.generate.layout_rank == 0  # a generator saved before the layout map has none
  assert c.text.learning_rate_scale == 1.0 and c.objective.ema_momentum == defaults().objective.ema_momentum
  assert c.eval.finetune_epochs == defaults().eval.finetune_epochs
  assert "an_old_field" not in c.train and c.model.num_layers == 2 and c.model.bidirectional is True
  assert c.eval.retrieval_ks == (1, 5, 10, 20) and isinstance(c.data.augment.crop_scale, tuple)
  assert migrate(to_dict(load_config("large"))).to_dict() == load_config("large").to_dict()


@pytest.mark.slow
def test_installed_package_trains_from_a_bare_config_name_outside_the_repository(tmp_path, data_dir):
  """A non-editable install (the wheel setuptools builds from pyproject.toml), run from a folder with
  no configs/: `sora-jax train --config default` finds the config inside the package, then evaluates."""
  uv = shutil.which("uv", path=str(pathlib.Path(sys.executable).parent)) or shutil.which("uv")
  assert uv, "uv is installed with the venv (Makefile)"
  src, wheels, site = tmp_path / "src", tmp_path / "wheels", tmp_path / "site"
  shutil.copytree(ROOT, src, symlinks=True, ignore=shutil.ignore_patterns(".venv", ".git", "runs", "build",
                                                                           "*.egg-info", "__pycache__"))
  subprocess.run([uv, "build", "-q", "--wheel", "--no-build-isolation", "--python", sys.executable, "-o",
                  str(wheels), str(src)], check=True)
  subprocess.run([uv, "pip", "install", "-q", "--no-deps", "--python", sys.executable, "--target", str(site),
                  *map(str, wheels.glob("*.whl"))], check=True)
  work = tmp_path / "elsewhere"
  work.mkdir()
  env = dict(os.environ, PYTHONPATH=str(site))
  overrides = ["data.name=moving_shapes/small", f"data.data_dir={data_dir}", "data.num_frames=4",
               "data.frame_size=16", "model.width=0.125", "model.hidden_size=8", "model.embed_dim=8",
               "model.head_hidden=16", "train.batch_size=8", "train.num_steps=2", "train.quick_eval_every=0",
               "optimizer.warmup_steps=1", "mesh.data=2"]
  run = subprocess.run([sys.executable, "-c", "import sora_jax, sys; print(sora_jax.__file__); "
                        "from sora_jax.cli import main; sys.exit(main(sys.argv[1:]))", "train", "--config", "infonce",
                        "--workdir", "run", *(f"--config.{o}" for o in overrides)],
                       cwd=work, env=env, capture_output=True, text=True, timeout=600)
  assert run.returncode == 0, run.stderr[-2000:]
  assert run.stdout.splitlines()[0].startswith(str(site)) and not (work / "configs").exists()
  saved = json.loads((work / "run" / "config.json").read_text())
  assert saved["train"]["num_steps"] == 2 and saved["model"]["temporal"] == "lstm"
  ev = subprocess.run([sys.executable, "-c", "import sys; from sora_jax.cli import main; sys.exit(main(sys.argv[1:]))",
                       "eval", "--workdir", "run", "--no-progress", "--baselines", "",
                       "--config.eval.finetune_epochs=0", "--config.eval.probe_steps=20", "--config.eval.max_examples=48"],
                      cwd=work, env=env, capture_output=True, text=True, timeout=600)
  assert ev.returncode == 0, ev.stderr[-2000:]
  assert "self-supervised (step 2)" in ev.stdout and (work / "run" / "eval" / "report.json").is_file()


def _flatten(d, prefix=""):
  out = {}
  for k, v in d.items():
    out.update(_flatten(v, f"{prefix}{k}.") if isinstance(v, dict) else {f"{prefix}{k}": v})
  return out


def test_the_config_reference_in_docs_is_the_schema():
  text = (ROOT / "docs" / "configs.md").read_text()
  begin = "<!-- config-reference:begin (make config-docs rewrites this block) -->"
  block = text[text.index(begin) + len(begin):text.index("<!-- config-reference:end -->")]
  assert block.strip() == reference(), "docs/configs.md's config reference is stale: run `make config-docs`"


@pytest.mark.parametrize("overrides", [["model.bidirectional=true"],
                                       ["model.temporal=transformer", "model.causal=false"]])
def test_predictive_objective_refuses_a_model_that_sees_the_future(overrides):
  with pytest.raises(ConfigError, match="must not see frames after t"):
    validate(load_config("dpc", overrides))
  validate(load_config("dpc", ["model.temporal=transformer", "model.causal=true"]))  # causal: accepted


@pytest.mark.parametrize("override", ["optimizer.learning_rate=nan", "optimizer.learning_rate=inf",
                                      "objective.temperature=-inf", "data.augment.flip_prob=nan",
                                      "model.input_std=(0.25, inf, 0.25)", "data.augment.crop_scale=(nan, 1.0)"])
def test_non_finite_numbers_are_refused_before_anything_runs(override):
  with pytest.raises(ConfigError, match=override.split("=")[0]):
    validate(load_config("infonce", [override]))


@pytest.mark.parametrize("overrides,words", [(["data.view_strides=(2, 1, 1)"], "3 strides for data.num_views=2"),
                                             (["data.view_strides=(2, 0)"], "positive integers"),
                                             (["data.view_strides=(2, 1)", "data.sampling=uniform"], "sampling=random"),
                                             (["data.view_strides=(2, 1)", "data.view_gap=decreasing"], "view_gap=uniform"),
                                             (["objective.name=infonce+appearance", "data.num_frames=1"],
                                              "'appearance' averages"),
                                             (["model.actor_appearance=true", "data.num_frames=1"],
                                              "model.actor_appearance averages")])
def test_view_strides_and_the_half_pairing_terms_refuse_configs_they_cannot_serve(overrides, words):
  with pytest.raises(ConfigError, match=words):
    validate(load_config("infonce", overrides))
  validate(load_config("infonce", ["data.view_strides=(2, 1)"]))


@pytest.mark.parametrize("value,ok", [("", True), ("10:13", True), ("0:1", True), ("3:3", False), ("5:2", False),
                                      ("a:b", False), ("10", False), ("-1:2", False)])
def test_profile_steps_takes_a_start_stop_window(value, ok):
  config = load_config("infonce", [f"train.profile_steps={value}"]) if value else load_config("infonce")
  if ok:
    validate(config)
  else:
    with pytest.raises(ConfigError, match="START:STOP"):
      validate(config)
