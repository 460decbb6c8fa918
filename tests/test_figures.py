"""The figure tables (README and docs/) come from a recorded run of the current default config (`make figures`)."""

import json
import pathlib
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))
import figure_tables  # noqa: E402
import figures  # noqa: E402  (bench/figures.py: its main() parses the command line, not its import)

RESULTS = json.loads((ROOT / "bench" / "results" / "figures.json").read_text())


def test_every_readme_figure_block_is_what_the_recorded_results_render_to():
  assert set(RESULTS) == {"moving_shapes", "moving_digits", "benchmarks", "text"}
  texts = {f: f.read_text() for f in figure_tables.documents(ROOT)}
  assert figure_tables.rewrite_all(texts, RESULTS) == texts, "figures in README.md or docs/ differ from " \
      "bench/results/figures.json: run `make figures` (or `python bench/figures.py --render`)"
  for data in RESULTS.values():
    m = data["machine"]
    assert m["cpu"] and m["cores"] >= 1 and m["versions"]["jax"] and len(m["load"]) == 2


@pytest.mark.parametrize("part", ["moving_shapes", "moving_digits", "text"])
def test_the_tables_were_measured_with_the_default_config_as_it_is(part):
  """A change to a default that existed when the tables were made means they no longer describe
  `make train` (or the named config the part trains): rerun `make figures`. (Fields added since are
  migrated with their old behaviour.)"""
  data = RESULTS[part]
  recorded = figures.flat(data["config"])
  name = data["command"].split("--config ")[1].split()[0]
  current = figures.flat(figures.wanted_config(name, data["overrides"]))
  changed = sorted(k for k, v in recorded.items() if k != "data.data_dir" and current.get(k, v) != v)
  assert not changed, f"default config changed since `make figures` measured {part}: {changed}; rerun it"
  report = data["report"]
  assert report["checkpoint_step"] == current["train.num_steps"]
  baselines = data.get("baselines") or ",".join(current["eval.baselines"])  # the part's --baselines, else the config's
  assert set(report["models"]) == {"ssl", *baselines.split(",")} - {"bag_of_words"}  # (that one is a text_baselines row)
  if "bag_of_words" in baselines:
    assert set(report["text_baselines"]) == {"bag_of_words"}


def test_blocks_are_replaced_between_their_markers_and_a_missing_block_is_an_error():
  part = {"machine": {"date": "2026-01-01", "cpu": "X", "isa": "avx2", "cores": 2, "load": [0.5, 0.7],
                      "versions": {"python": "3.11", "jax": "0.1"}},
          "model_step": {"jax_forward_clips_per_s": 2.0, "jax_train_step_clips_per_s": 1.0}}
  text = "a\n" + figure_tables.BEGIN.format("benchmarks") + "\nold\n" + figure_tables.END.format("benchmarks") + "\nb\n"
  out = figure_tables.rewrite(text, {"benchmarks": part})
  assert out.startswith("a\n") and out.endswith("\nb\n") and "old" not in out
  assert "on X (avx2), 2 cores, load average 0.5-0.7; Python 3.11, jax 0.1." in out
  assert "| `bench/model_step.py` | seed config" in out and "forward 2.0 clips/s, train step 1.0 (no PyTorch)" in out
  assert figure_tables.rewrite(out, {"benchmarks": part}) == out
  with pytest.raises(SystemExit, match="no block for 'moving_digits'"):
    figure_tables.rewrite(text, {"moving_digits": part})


def test_a_text_part_renders_the_video_table_and_the_video_text_rows_of_each_tower():
  one_seed = {k: v for k, v in RESULTS["moving_shapes"].items() if k not in ("seed_reports", "seeds_training_reused")}
  data = dict(one_seed, command="train.py --config text")
  figs = lambda r: {"retrieval": {"held_out": {"text_to_video": {"R@1": r, "R@5": r}}},
                    "zero_shot": {"appearance": r, "motion": r}}
  data["report"] = dict(data["report"], text=figs(0.5), text_baselines={"bag_of_words": figs(0.25)})
  out = figure_tables.render("text", data)
  assert out.startswith(figure_tables.stamp(data["machine"])) and "`python train.py --config text`" in out
  assert "| pretrained MiniLM (frozen) | held_out | text to video | 50.0 | 50.0 |" in out
  assert "| bag of words (from scratch) | held_out | text to video | 25.0 | 25.0 |" in out
  assert "## Video-text" not in out and figure_tables.render("moving_shapes", one_seed) in out.replace(
      "train.py --config text", one_seed["command"])
  seeds = figure_tables.render("text", dict(data, seed_reports=[data["report"]] * 2))
  assert "the video-text rows below: seed 0" in seeds and "rows below" not in figure_tables.render(
      "moving_shapes", dict(one_seed, seed_reports=[one_seed["report"]] * 2))


def _report(linear, knn):
  return {"models": {"ssl": {"title": "self-supervised", "appearance": {"linear": linear, "knn": knn}},
                     "random": {"title": "random init", "appearance": {"linear": 0.4, "knn": None}}},
          "chance": {"appearance": 0.2}}


def test_several_seeds_render_as_mean_and_sample_std_per_figure():
  table = figure_tables.seeds_table([_report(0.90, 0.80), _report(0.94, 0.80), _report(0.92, 0.86)])
  lines = table.splitlines()
  assert lines[0] == "| model | linear | kNN |"
  assert lines[2] == "| self-supervised | 92.0 ± 2.0 | 82.0 ± 3.5 |"
  assert lines[3] == "| random init | 40.0 | – |" and lines[4].startswith("| majority class | 20.0 |")
  with pytest.raises(ValueError, match="different models"):
    figure_tables.seeds_table([_report(0.9, 0.8), {"models": {}, "chance": {}}])
  part = {"machine": {"date": "2026-01-01", "cpu": "X", "isa": "avx2", "cores": 2, "load": [0.5, 0.7],
                      "versions": {"python": "3.11", "jax": "0.1"}}, "command": "train.py --config default",
          "train_s": 60, "eval_s": 120, "report": _report(0.90, 0.80)}
  assert "92.0 ±" not in figure_tables.render("moving_shapes", part)  # one seed: that seed's table
  many = figure_tables.render("moving_shapes", dict(part, seed_reports=[_report(0.90, 0.80), _report(0.94, 0.84)]))
  assert "Mean ± std over 2 seeds" in many and "| self-supervised | 92.0 ± 2.8 | 82.0 ± 2.8 |" in many
  assert "took 1 min" in many and "was reused" in figure_tables.render("moving_shapes", dict(part, train_s=None))
  assert "seeds 1, 2: trained by an earlier run" in figure_tables.render(
      "moving_shapes", dict(part, seed_reports=[_report(0.9, 0.8)] * 3, seeds_training_reused=[1, 2]))


def test_reuse_knows_a_finished_training_of_the_same_config(tmp_path):
  wanted = figures.wanted_config("default", ["--config.seed=1"])
  (tmp_path / "checkpoints" / str(wanted["train"]["num_steps"])).mkdir(parents=True)
  saved = json.loads(json.dumps(wanted))
  saved["eval"]["baselines"], saved["data"]["data_dir"] = [], "/elsewhere"  # neither changes what was trained
  (tmp_path / "config.json").write_text(json.dumps(saved))
  assert not figures.finished_training(tmp_path, wanted)  # not trained by figures.py: CPU type unknown
  (tmp_path / figures.TRAINED_ON).write_text(json.dumps(dict(figures.cpu_type(figures.machine()), isa="other")))
  assert not figures.finished_training(tmp_path, wanted)  # another CPU type trains another run
  (tmp_path / figures.TRAINED_ON).write_text(json.dumps(figures.cpu_type(figures.machine())))
  assert figures.finished_training(tmp_path, wanted)
  assert not figures.finished_training(tmp_path, figures.wanted_config("default", ["--config.seed=2"]))
  assert not figures.finished_training(tmp_path, figures.wanted_config("infonce", ["--config.seed=1"]))
  (tmp_path / "checkpoints" / str(wanted["train"]["num_steps"])).rmdir()  # stopped before its last step
  assert not figures.finished_training(tmp_path, wanted)


def test_reuse_keeps_the_stored_seeds_and_runs_only_the_missing_ones(monkeypatch, tmp_path):
  runs, saves = [], []

  def fake_run(name, overrides, workdir, logs, config="default", baselines=None, reuse=False):
    runs.append((name, overrides, reuse))
    return {"report": _report(0.5, 0.5), **({"training_reused": str(workdir)} if name.endswith("2") else {})}
  monkeypatch.setattr(figures, "run_eval_part", fake_run)
  stored = {"machine": figures.machine(), "baselines": "random", "overrides": [], "report": {"checkpoint_step": 600},
            "config": figures.wanted_config("default", []), "seed_reports": [_report(0.9, 0.8), _report(0.8, 0.8)]}
  part = figures.seeded("shapes", [], tmp_path / "w", baselines="random")
  out = part(tmp_path, 4, stored, reuse=True, save=saves.append)
  assert [r[0] for r in runs] == ["shapes-seed2", "shapes-seed3"] and all(r[2] for r in runs)
  assert runs[0][1] == ["--config.seed=2"] and out["seeds_training_reused"] == [2]
  assert out["seed_reports"][:2] == stored["seed_reports"] and len(out["seed_reports"]) == 4
  assert [len(s["seed_reports"]) for s in saves] == [2, 3]  # saved before each new seed: nothing lost on a stop
  runs.clear()
  part(tmp_path, 2, dict(stored, baselines="random,supervised"), reuse=True)  # other baselines: all of it again
  assert [r[0] for r in runs] == ["shapes", "shapes-seed1"]
  runs.clear()
  part(tmp_path, 2, dict(stored, machine=dict(stored["machine"], cpu="another")), reuse=True)  # measured elsewhere
  assert [r[0] for r in runs] == ["shapes", "shapes-seed1"]
  runs.clear()
  part(tmp_path, 2, stored, reuse=False)
  assert [r[0] for r in runs] == ["shapes", "shapes-seed1"] and not any(r[2] for r in runs)


def test_a_reused_training_is_not_rerun_and_its_eval_is(monkeypatch, tmp_path):
  commands = []

  def fake_run(cmd, log):  # the commands figures.py would launch; eval "writes" its report
    commands.append(cmd[1])
    workdir = pathlib.Path(cmd[cmd.index("--workdir") + 1])
    if cmd[1] == "train.py":
      config = figures.wanted_config("default", [])
      (workdir / "checkpoints" / str(config["train"]["num_steps"])).mkdir(parents=True)
      (workdir / "config.json").write_text(json.dumps(config))
    else:
      (workdir / "eval").mkdir(exist_ok=True)
      (workdir / "eval" / "report.json").write_text(json.dumps({"models": {}, "checkpoint_step": 7}))
    return ""
  monkeypatch.setattr(figures, "_run", fake_run)
  fresh = figures.run_eval_part("p", [], tmp_path / "w", tmp_path, reuse=True)
  assert commands == ["train.py", "eval.py"] and fresh["train_s"] >= 0 and "training_reused" not in fresh
  again = figures.run_eval_part("p", [], tmp_path / "w", tmp_path, reuse=True)
  assert commands[2:] == ["eval.py"] and again["train_s"] is None and again["eval_s"] >= 0
  assert again["training_reused"] == str(tmp_path / "w") and again["report"]["checkpoint_step"] == 7
  figures.run_eval_part("p", [], tmp_path / "w", tmp_path, reuse=False)  # without --reuse: trained afresh
  assert commands[3:] == ["train.py", "eval.py"]
