"""Every protocol on a run's checkpoint and its baselines (`sora-jax eval`, `python eval.py`).

Writes under W/eval: embeddings/ (npz shards per model and split, reused while the checkpoint is
the same), report.json, report.md and PNG plots.
"""

from __future__ import annotations

import copy
import json
import logging

import jax
import numpy as np
from jax.experimental import multihost_utils

from sora_jax import storage
from sora_jax.config import apply_overrides, terms, validate
from sora_jax.config.checks import as_names
from sora_jax.data import pipeline
from sora_jax.errors import ConfigError
from sora_jax.evaluation import (
  actors as actors_eval,
  baselines as bl,
  features,
  finetune as ft,
  generation,
  report,
  retrieval,
  suite,
  temporal,
  text as text_eval,
)
from sora_jax.models import i3d
from sora_jax.training.checkpoint import load_run

log = logging.getLogger("sora_jax.eval")

TITLES = {"ssl": "self-supervised", "random": "random init", "supervised": "supervised",
          "pretrained": "ImageNet init (step 0)", "i3d_kinetics": "I3D Kinetics-400 (supervised, frozen)"}


def _splits(config, info: dict):
  """(train, validation or None, test) split names."""
  names = info.get("splits", {})
  val = next((v for v in ("validation", "val", "valid") if v in names and v != config.data.eval_split), None)
  return config.data.train_split, val, config.data.eval_split


def embed_model(config, variables, out_dir, info, fingerprint, *, shuffled: bool, progress: bool, embed_fn=None):
  """-> (train, val, test) embedded splits (validation carved from train when the data has none)."""
  train_split, val_split, test_split = _splits(config, info)
  max_n = int(config.eval.max_examples)
  seed = config.seed + 1 if shuffled else None
  suffix = "-shuffled" if shuffled else ""
  get = lambda split, cap: features.extract(config, variables, split, storage.path(out_dir) / f"{split}{suffix}",
                                         fingerprint=fingerprint, shuffle_seed=seed, max_examples=cap,
                                         progress=progress, embed_fn=embed_fn)
  train = get(train_split, max_n)
  test = get(test_split, 0)
  if val_split:
    val = get(val_split, 0)
  else:
    train, val = suite.split_validation(train, float(config.eval.val_fraction), config.seed)
  return train, val, test


def evaluate_model(config, variables, out_dir, info, fingerprint, *, progress=True, embed_fn=None) -> tuple[dict, tuple]:
  """Figures of one model: appearance, motion, shuffled, drops. Returns (figures, ordered splits)."""
  embed_fn = embed_fn or features.make_embed_fn(config)
  ordered = embed_model(config, variables, out_dir, info, fingerprint, shuffled=False, progress=progress,
                        embed_fn=embed_fn)
  figs = {}
  app = suite.figures(config, *ordered, label_key="label", num_classes=int(info["num_classes"]))
  if app:
    figs["appearance"] = app
  shuffled = None
  if int(info.get("num_motion_classes") or 0) > 1 or app:
    shuffled = embed_model(config, variables, out_dir, info, fingerprint, shuffled=True, progress=progress,
                           embed_fn=embed_fn)
  figs.update(temporal.temporal_figures(config, info, ordered, shuffled))
  figs["shuffle_drop"] = temporal.drops(figs)
  if "actor_mask" in ordered[2]:  # per-actor probes (data with tracks)
    figs["actors"] = actors_eval.actor_figures(config, info, ordered)
  return figs, ordered


def evaluate(workdir, *, step: int | None = None, progress: bool = True, baselines=None, overrides=()) -> dict:
  """Evaluates the latest (or given) checkpoint of `workdir` and its baselines; writes W/eval.

  overrides: `eval.FIELD=value` strings applied to the run's saved config (nothing else may change:
  the model and data are what was trained). Returns the report (also in W/eval/report.json), with
  the written files under "paths".
  """
  workdir = storage.path(workdir)
  config, variables, objective_params, ckpt_step = load_run(workdir, step)
  _override(config, overrides)
  if "generate" in terms(config.objective.name):  # a generator run: its own figures
    return generation.evaluate_generator(workdir, step=ckpt_step, progress=progress, config=config,
                                         baselines_wanted=baselines)
  info = pipeline.dataset_info(config)
  wanted = as_names(config.eval.baselines if baselines is None else baselines)
  models = _models(config, variables, ckpt_step, workdir, info, wanted)
  results, ssl_splits = _evaluate_models(config, models, workdir / "eval" / "embeddings", info, progress)
  epochs = int(config.eval.finetune_epochs)
  if epochs and info.get("num_classes", 0) > 1:
    _finetune(config, models, results, info, epochs, progress)
  rep = {
      "workdir": str(workdir), "checkpoint_step": ckpt_step, "config": config.to_dict(),
      "dataset": {"name": config.data.name, **{k: info.get(k) for k in
                                               ("num_classes", "class_names", "num_motion_classes", "motion_names", "splits")}},
      "chance": {"appearance": suite.chance(ssl_splits[2], "label"), "motion": suite.chance(ssl_splits[2], "motion_label")},
      "protocol": _protocol(config, info, epochs),
      "models": results,
      "devices": jax.device_count(),
  }
  if "aligned" in ssl_splits[2]:
    rep["text"] = text_eval.text_figures(config, objective_params, info, ssl_splits[2])
    if "bag_of_words" in wanted:
      rep["text_baselines"] = {"bag_of_words": _bag_of_words(config, workdir, info, progress)}
  rep["plots"], rep["paths"] = {}, {}
  classifier = actors_eval.fit_classifiers(config, info, ssl_splits, results["ssl"].get("actors", {}))
  if jax.process_index() == 0:  # every process holds the same figures; one writes them
    rep["plots"] = _plots(config, workdir, workdir / "eval", info, ssl_splits, progress)
    rep["paths"] = report.write_report(workdir / "eval", rep)
    if classifier is not None:
      with (workdir / "eval" / actors_eval.CLASSIFIER_FILE).open("wb") as f:
        np.savez(f, **classifier, step=np.array(ckpt_step))
      rep["paths"]["actor_classifier"] = str(workdir / "eval" / actors_eval.CLASSIFIER_FILE)
  return rep


def _data_key(config, info) -> dict:
  """Stored embeddings are reused only for the same weights (the caller's part) and these data and
  clip settings."""
  return {"data": config.data.name, "splits": info.get("splits"), "frames": config.data.num_frames,
          "size": config.data.frame_size, "stride": config.data.stride}


def _models(config, variables, ckpt_step, workdir, info, wanted) -> dict:
  """name -> (config, variables, embedding-cache fingerprint[, apply]) for the run and each wanted
  baseline (`apply`: a network other than the run's architecture, see `features.make_embed_fn`)."""
  data_key = _data_key(config, info)
  models = {"ssl": (config, variables, {"model": "ssl", "step": ckpt_step, **data_key})}
  if "random" in wanted:
    models["random"] = (config, bl.random_variables(config), {"model": "random", "seed": config.seed, **data_key})
  if "pretrained" in wanted and config.model.pretrained:
    models["pretrained"] = (config, bl.pretrained_variables(config), {"model": "pretrained", **data_key})
  elif "pretrained" in wanted:
    log.warning("eval.baselines has pretrained, but this run did not start from pretrained weights "
                "(model.pretrained is false): no such row")
  if "supervised" in wanted:
    sup_config, sup_vars, sup_step = bl.supervised_variables(config, workdir, info)
    models["supervised"] = (_with_model(config, sup_config), sup_vars,
                            {"model": "supervised", "step": sup_step, **data_key})
  if "i3d_kinetics" in wanted:
    models["i3d_kinetics"] = (config, i3d.load_kinetics(), {"model": "i3d_kinetics", "i3d_size": bl.i3d_size(config),
                                                            **data_key}, bl.i3d_apply(config))
  return models


def _evaluate_models(config, models, emb_dir, info, progress) -> tuple[dict, tuple]:
  """-> (name -> figures, the run's own embedded splits)."""
  results, ssl_splits, fns = {}, None, {}
  for name, (cfg, var, fp, *apply) in models.items():
    log.info("evaluating %s", TITLES[name])
    key = name if apply else json.dumps(cfg.model.to_dict(), sort_keys=True, default=str)
    if key not in fns:  # one compilation per architecture
      fns[key] = features.make_embed_fn(cfg, apply=apply[0] if apply else None)
    figs, splits = evaluate_model(cfg, var, emb_dir / name, info, fp, progress=progress, embed_fn=fns[key])
    figs["title"] = TITLES[name] + (f" (step {fp['step']})" if "step" in fp else "")
    figs["cost"] = _cost(fns[key], var, emb_dir / name)
    results[name] = figs
    if name == "ssl":
      ssl_splits = splits
  return results, ssl_splits


def _cost(embed_fn, variables, model_dir) -> dict:
  """What embedding one clip costs: XLA's FLOP count, and the wall time of the extraction that wrote
  the stored embeddings (unshuffled splits; measured on the machine and run that computed them)."""
  metas = [m for d in sorted(storage.path(model_dir).glob("*")) if not d.name.endswith("-shuffled")
           for m in [features.read_meta(d)] if m and m.get("clips")]
  seconds, clips = sum(m["seconds"] for m in metas), sum(m["clips"] for m in metas)
  if jax.process_count() > 1:  # process 0 wrote the metadata: every process reports its figures
    seconds, clips = (float(v) for v in multihost_utils.broadcast_one_to_all(np.asarray([seconds, clips], np.float64)))
  flops = embed_fn.flops_per_clip(variables)
  return {"gflops_per_clip": flops / 1e9 if flops else None, "ms_per_clip": 1e3 * seconds / clips if clips else None,
          "devices": jax.device_count()}


def _bag_of_words(config, workdir, info, progress) -> dict:
  """Video-text figures of the run retrained over a text tower learned from scratch (same budget)."""
  bow_config, variables, params, step = bl.bag_of_words_run(config, workdir)
  fingerprint = {"model": "bag_of_words", "step": step, **_data_key(config, info)}
  test = features.extract(bow_config, variables, config.data.eval_split,
                       workdir / "eval" / "embeddings" / "bag_of_words" / config.data.eval_split,
                       fingerprint=fingerprint, progress=progress)
  return dict(text_eval.text_figures(bow_config, params, info, test), step=step)


def _finetune(config, models, results, info, epochs, progress) -> None:
  lr, head_lr = float(config.eval.finetune_learning_rate), float(config.eval.finetune_head_learning_rate)
  for name in ("ssl", "random"):  # random init, same budget: what the pretraining is worth
    if name in models:
      log.info("fine-tuning the %s encoder for %d epochs", TITLES[name], epochs)
      results[name]["finetune"] = ft.finetune(config, models[name][1], info, epochs=epochs, progress=progress,
                                              learning_rate=lr, head_learning_rate=head_lr)


def _override(config, overrides) -> None:
  for item in overrides:
    key = item.partition("=")[0].removeprefix("config.")
    if not key.startswith("eval."):
      raise ConfigError(f"override {item!r}: only --config.eval.FIELD=VALUE can change at evaluation time")
  if overrides:
    apply_overrides(config, overrides)
    validate(config, sections=("eval",))


def _with_model(config, other):
  """The run's config (data, eval) with `other`'s model section."""
  cfg = copy.deepcopy(config)
  with cfg.ignore_type():
    cfg.model = copy.deepcopy(other.model)
  return cfg


def _protocol(config, info, epochs) -> dict:
  e = config.eval
  train_split, val_split, test_split = _splits(config, info)
  return {
      "feature": f"{config.eval.feature}, L2-normalised, averaged over "
                 f"{e.num_clips} clip(s) x {e.num_crops} crop(s)",
      "linear": f"softmax regression (full-batch Adam, {config.eval.probe_steps} steps); "
                f"lr in {tuple(config.eval.probe_learning_rates)}, L2 weight decay in "
                f"{tuple(config.eval.probe_weight_decays)} chosen on "
                f"{val_split or 'a held-out part of ' + train_split}, refit on train+validation, scored on {test_split}",
      "knn": f"weighted kNN (DINO): k={e.knn_k}, votes exp(cos/{e.knn_temperature}), bank = {train_split}"
             + (f"+{val_split}" if val_split else ""),
      "retrieval": f"{test_split} clips query {train_split}" + (f"+{val_split}" if val_split else "")
                   + f" clips by cosine similarity; hit = same label in the top k; "
                   f"{'features centred on the gallery mean' if e.mean_center else 'no mean-centring'}",
      "temporal": "motion = the same protocols on the motion labels; shuffled = frames of every clip permuted "
                  "(seeded) before embedding, for train and test",
      "finetune": (f"encoder + linear classifier, cross-entropy, {epochs} epoch(s) of {train_split}, AdamW with a "
                   f"cosine schedule from lr {config.eval.finetune_learning_rate} (new head: "
                   f"{config.eval.finetune_head_learning_rate}), one augmented view per clip; "
                   "the same for the self-supervised and the random-init encoder" if epochs else "off"),
  }


def _plots(config, workdir, out, info, ssl_splits, progress) -> dict:
  plots = {}
  curves = report.plot_training_curves(workdir / "metrics.jsonl", out / "training_curves.png")
  if curves:
    plots["training_curves"] = curves
  train, val, test = ssl_splits
  feature = config.eval.feature
  names = info.get("class_names")
  if (test["label"] >= 0).any():
    method = config.eval.projection
    plots["projection"] = report.plot_projection(test[feature][test["label"] >= 0], test["label"][test["label"] >= 0],
                                                 out / "projection.png", class_names=names, method=method,
                                                 title=f"test embeddings ({method.upper()}), by class")
    try:
      plots["retrieval_gallery"] = _gallery(config, info, train, val, test, feature, out / "retrieval_gallery.png")
    except Exception as e:  # noqa: BLE001 - a plot must not lose the figures
      log.warning("retrieval gallery not drawn: %s", e)
  return plots


def _gallery(config, info, train, val, test, feature, path, num_queries=4, k=5) -> str:
  gallery = {key: np.concatenate([train[key], val[key]]) for key in ("video_id", "label", feature)}
  rng = np.random.default_rng(config.seed)
  labelled = np.flatnonzero(test["label"] >= 0)
  queries = np.sort(rng.choice(labelled, size=min(num_queries, len(labelled)), replace=False))
  top = retrieval.nearest(test[feature][queries], gallery[feature], k, mean_center=bool(config.eval.mean_center))
  want = set(test["video_id"][queries].tolist()) | set(gallery["video_id"][top].ravel().tolist())
  clips = _fetch_clips(config, info, want)
  names = info.get("class_names") or []
  name = lambda y: names[y] if 0 <= y < len(names) else str(y)
  q_clips = np.stack([clips[i] for i in test["video_id"][queries]])
  r_clips = np.stack([[clips[i] for i in row] for row in gallery["video_id"][top]])
  hits = gallery["label"][top] == test["label"][queries][:, None]
  return report.plot_retrieval_gallery(q_clips, r_clips, hits, path,
                                       query_titles=[f"query: {name(y)}" for y in test["label"][queries]],
                                       result_titles=[[name(y) for y in row] for row in gallery["label"][top]])


def _fetch_clips(config, info, ids: set) -> dict:
  """video_id -> first clip uint8 [T, H, W, 3], reading the splits until every id is found."""
  found = {}
  for split in dict.fromkeys(s for s in _splits(config, info) if s):
    for batch in pipeline.eval_batches(config, split, batch_size=config.eval.batch_size, num_clips=1, num_crops=1):
      for vid, m, clip in zip(batch["video_id"], batch["mask"], batch["video"]):
        if m and int(vid) in ids:
          found[int(vid)] = np.asarray(clip[0] if clip.ndim == 5 else clip)
      if len(found) == len(ids):
        return found
  return found
