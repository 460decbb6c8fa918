"""The figures of a generator run (`sora-jax eval --workdir RUN_G`), against the MSE decoder baseline.

Each of `generate.eval_examples` test clips conditions one sample (its embedding by the frozen encoder,
the same seed for every model). Then, with the frozen encoder's pooled features (eval.feature):
- re-recognition: linear probes fitted on real train clips' features (appearance: `label`, motion:
  `motion_label`) classify the generated clips; the score is agreement with the conditioning clip's
  labels ("real" = the probes on the real test clips: the ceiling);
- Fréchet distance (FVD-style, on this encoder's features) between the real test clips and the
  generated ones; "real" = real test clips against as many real train clips (the floor);
- text (a generator on a video-text space, generate.condition=aligned): each test video's held-out
  caption (phrasings never trained on) conditions a sample too, scored the same way;
- diversity: mean pairwise distance between 4 samples of each of the first 32 conditions (RMS pixel
  distance in [0, 1] units, and feature distance): 0 for a deterministic decoder;
- sampling speed (clips/s, this eval's batches; bench/generate.py measures it properly).
A run with generate.ema_decay > 0 samples from its weights' moving average; a row with the trained
weights themselves, on the same conditions and noise, shows what the average is worth.
The MSE decoder (generate.method=mse, the run's config otherwise) is trained into
<workdir>/baselines/generate_mse when eval.baselines has generate_mse (the generate config's default).
"""

from __future__ import annotations

import copy
import json
import time

import numpy as np
import scipy.linalg

from sora_jax import storage
from sora_jax.config.checks import as_names, parse_samplers
from sora_jax.data import pipeline
from sora_jax.data.synthetic import png
from sora_jax.errors import ConfigError
from sora_jax.evaluation import baselines, features, probes, suite, text as text_eval
from sora_jax.evaluation.sampler import Sampler
from sora_jax.objectives import GENERATOR_EMA, sampling_generator
from sora_jax.training.checkpoint import load_run

DIVERSITY_CONDITIONS, DIVERSITY_SAMPLES = 32, 4
LABELS = (("appearance", "label", "num_classes"), ("motion", "motion_label", "num_motion_classes"))


def frechet_distance(a: np.ndarray, b: np.ndarray) -> float:
  """||mu_a - mu_b||^2 + Tr(S_a + S_b - 2 (S_a S_b)^(1/2)) of two feature sets [N, D], [M, D]."""
  a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
  mu_a, mu_b = a.mean(0), b.mean(0)
  s_a, s_b = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
  root = scipy.linalg.sqrtm(s_a @ s_b)
  root = np.real(root)  # the imaginary part is numerical noise for PSD products
  return float(np.sum((mu_a - mu_b) ** 2) + np.trace(s_a + s_b - 2.0 * root))


def mean_pairwise(x: np.ndarray) -> float:
  """Mean L2 distance between the rows of each group: x [G, K, D] -> float."""
  d = np.sqrt(np.maximum(((x[:, :, None] - x[:, None, :]) ** 2).sum(-1), 0.0))
  k = x.shape[1]
  return float(d.sum() / (x.shape[0] * k * (k - 1)))


def real_clips(config, split: str, limit: int = 0) -> dict:
  """The first `limit` (0: all) eval clips of `split` (one centred clip each): video uint8
  [N, T, S, S, 3], label, motion_label, video_id."""
  rows: dict = {"video": [], "label": [], "motion_label": [], "video_id": []}
  count = 0
  for batch in pipeline.eval_batches(config, split, batch_size=config.eval.batch_size):
    mask = np.asarray(batch["mask"], bool)
    rows["video"].append(np.asarray(batch["video"])[mask][:, 0])
    for key in ("label", "motion_label", "video_id"):
      rows[key].append(np.asarray(batch[key])[mask])
    count += int(mask.sum())
    if limit and count >= limit:
      break
  out = {k: np.concatenate(v) for k, v in rows.items()}
  return {k: v[:limit] if limit else v for k, v in out.items()}


class _Encoder:
  """The frozen encoder of the run: uint8 clips [N, T, S, S, 3] -> {pooled, embedding, ...} [N, D]."""

  def __init__(self, config, variables):
    self.config, self.fn = config, features.make_embed_fn(config)
    self.variables = features.place_variables(config, variables, self.fn.mesh)

  def __call__(self, clips: np.ndarray) -> dict:
    b = self.config.eval.batch_size
    batches = ({"video": clips[i:i + b]} for i in range(0, len(clips), b))
    parts = list(features.embed_batches(self.config, self.variables, batches, embed_fn=self.fn))
    return {k: np.concatenate([p[k] for p in parts]) for k in parts[0] if k not in ("label", "motion_label", "video_id")}


def mse_config(config):
  """The baseline: the run's config with the deterministic MSE decoder."""
  cfg = copy.deepcopy(config)
  cfg.generate.method = "mse"
  return cfg


def _probes(config, info, train: dict, feature: str) -> dict:
  """{what: (w, b)} fitted on the real train clips' features (validation carved out for the sweep)."""
  tr, va = suite.split_validation(train, config.eval.val_fraction, config.seed)
  e, out = config.eval, {}
  for what, key, count in LABELS:
    if int(info.get(count) or 0) > 1 and (train[key] >= 0).any():
      w, b, _ = probes.fit_best_linear(tr[feature], tr[key], va[feature], va[key], num_classes=int(info[count]),
                                       learning_rates=tuple(e.probe_learning_rates),
                                       weight_decays=tuple(e.probe_weight_decays), steps=e.probe_steps)
      out[what] = (w, b)
  return out


def _recognised(classifiers: dict, feats: np.ndarray, test: dict) -> dict:
  keys = dict((what, key) for what, key, _ in LABELS)
  return {what: float(np.mean(probes.linear_predict(w, b, feats) == test[keys[what]]))
          for what, (w, b) in classifiers.items()}


def score_model(sampler: Sampler, encode: _Encoder, cond: np.ndarray, test: dict, real: dict, classifiers: dict,
                feature: str, seed: int, progress: bool, how: dict | None = None) -> dict:
  """The figures of one generator: one sample per test condition cond [N, E] (of test clip i), and
  the diversity samples; how: the sampler's guidance, solver, sample_steps (default: the run's)."""
  how = how or {}
  start = time.perf_counter()
  clips = sampler.sample(cond, num=1, seed=seed, progress=progress, **how)
  seconds = time.perf_counter() - start
  fake = encode(clips)
  some = cond[:DIVERSITY_CONDITIONS]
  many = sampler.sample(some, num=DIVERSITY_SAMPLES, seed=seed + 1, **how)
  g = len(some)
  pixels = many.reshape(g, DIVERSITY_SAMPLES, -1).astype(np.float32) / 255.0
  pixels_rms = mean_pairwise(pixels) / np.sqrt(pixels.shape[-1])
  feats = encode(many)[feature].reshape(g, DIVERSITY_SAMPLES, -1)
  return {"re_recognition": _recognised(classifiers, fake[feature], test),
          "frechet": frechet_distance(real[feature], fake[feature]),
          "diversity_pixels": float(pixels_rms), "diversity_features": mean_pairwise(feats),
          "clips_per_sec": len(clips) / seconds, "samples": clips}


def evaluate_generator(workdir, *, step: int | None = None, progress: bool = True, baselines_wanted=None,
                       config=None) -> dict:
  """Scores the generator run in `workdir` (and the MSE decoder unless `baselines_wanted`, default
  eval.baselines, is empty); writes W/eval/generation.json, .md and a PNG of real and generated clips
  (each row: a real clip's frames, then each model's sample for it). config: the run's with eval
  overrides (default: as saved). -> the report."""
  workdir = storage.path(workdir)
  saved, variables, objective_params, ckpt_step = load_run(workdir, step)
  config = config or saved
  wanted = as_names(config.eval.baselines if baselines_wanted is None else baselines_wanted)
  if set(wanted) - {"generate_mse"}:
    raise ConfigError(f"baselines {', '.join(wanted)}: a generator run's only baseline is generate_mse "
                      "(--baselines generate_mse, or '' for none)")
  info = pipeline.dataset_info(config)
  feature = config.eval.feature
  encode = _Encoder(config, variables)
  test = real_clips(config, config.data.eval_split, config.generate.eval_examples)
  train = real_clips(config, config.data.train_split, config.eval.max_examples)
  real, real_train = encode(test["video"]), encode(train["video"])
  classifiers = _probes(config, info, dict(real_train, label=train["label"], motion_label=train["motion_label"],
                                           video_id=train["video_id"]), feature)
  n = len(test["label"])
  report = {"kind": "generator", "workdir": str(workdir), "checkpoint_step": ckpt_step, "examples": n, "feature": feature,
            "encoder": config.generate.encoder_fingerprint, "models": {}, "real": {
                "re_recognition": _recognised(classifiers, real[feature], test),
                "frechet": frechet_distance(real[feature], real_train[feature][:n])}}
  models = {config.generate.method: Sampler(config, sampling_generator(objective_params), encode.fn.mesh)}
  if config.generate.method == "flow" and "generate_mse" in wanted:
    mse = mse_config(config)
    _, _, mse_params, _ = load_run(baselines.trained("generate_mse", mse, workdir))
    models["mse"] = Sampler(mse, sampling_generator(mse_params), encode.fn.mesh)
  conditions = {name: real[config.generate.condition] for name in models}
  if config.generate.condition == "aligned":  # a video-text space: each test video's held-out caption too
    texts = text_eval.eval_captions(config, test["video_id"])["held_out"]
    conditions[f"{config.generate.method} (text)"] = text_eval.embed_texts(config, objective_params, texts)
    models[f"{config.generate.method} (text)"] = models[config.generate.method]
  if GENERATOR_EMA in objective_params:  # what the average is worth: the trained weights on the same noise
    name = f"{config.generate.method} (trained weights, no average)"
    models[name] = Sampler(config, sampling_generator(objective_params, average=False), encode.fn.mesh)
    conditions[name] = conditions[config.generate.method]
  how = {}
  if config.generate.method == "flow":  # more sampler rows on the same conditions and noise
    for solver, guidance, steps in parse_samplers(config.eval.generate_samplers):
      steps = steps or config.generate.sample_steps
      name = f"flow ({solver}, guidance {guidance:g}, {steps} steps)"
      models[name], conditions[name] = models["flow"], conditions["flow"]
      how[name] = dict(solver=solver, guidance=guidance, sample_steps=steps)
  samples = {}
  for name, sampler in models.items():
    scores = score_model(sampler, encode, conditions[name], test, real, classifiers, feature, config.seed, progress,
                         how.get(name))
    samples[name] = scores.pop("samples")
    report["models"][name] = scores
  out = workdir / "eval"
  out.mkdir(parents=True, exist_ok=True)
  storage.write_text(out / "generation.json", json.dumps(report, indent=2))
  storage.write_text(out / "generation.md", markdown(report))
  storage.write_bytes(out / "generation.png", _sheet(test["video"], samples))
  report["paths"] = {k: str(out / f"generation.{k}") for k in ("json", "md", "png")}
  return report


def markdown(report: dict) -> str:
  """The report's table: one row per model, real clips first."""
  lines = [f"Generator {report['workdir']} (step {report['checkpoint_step']}), {report['examples']} test conditions, "
           f"features: the frozen encoder's {report['feature']} ({report['encoder']}).", "",
           "| clips | appearance re-recognised | motion re-recognised | Fréchet distance | diversity (pixels) | "
           "diversity (features) | clips/s |", "|---|--:|--:|--:|--:|--:|--:|"]
  rows = [("real (test vs train)", report["real"])] + [(f"generated: {k}", v) for k, v in report["models"].items()]
  for name, r in rows:
    rec = r["re_recognition"]
    cells = [f"{100 * rec[w]:.1f}" if w in rec else "" for w in ("appearance", "motion")]
    cells += [f"{r['frechet']:.3f}"] + [f"{r[k]:.4f}" if k in r else "" for k in ("diversity_pixels", "diversity_features")]
    cells.append(f"{r['clips_per_sec']:.1f}" if "clips_per_sec" in r else "")
    lines.append(f"| {name} | " + " | ".join(cells) + " |")
  return "\n".join(lines) + "\n"


def _sheet(real: np.ndarray, samples: dict, rows: int = 8) -> bytes:
  """PNG: for the first `rows` conditions, the real clip's frames, then each model's sample."""
  strips = []
  for i in range(min(rows, len(real))):
    for clips in [real] + list(samples.values()):
      strips.append(np.concatenate(list(clips[i]), axis=1))
    strips.append(np.full((2,) + strips[-1].shape[1:], 255, np.uint8))
  return png(np.concatenate(strips, axis=0)).getvalue()
