"""The baselines evaluated next to a run: random weights, a supervised-trained encoder, and for a run
with a video_text term the same run over a text tower trained from scratch.

- random: the run's architecture initialised from config.seed, never trained;
- pretrained: a model.pretrained run's starting point (the ImageNet frame encoder), never trained;
- i3d_kinetics: I3D with its Kinetics-400 weights (`models.i3d`), frozen: average-pooled Mixed_5c
  of the run's clips, resized to eval.i3d_frame_size (0: kept at the clip's size);
- supervised: the same architecture with a classifier head, trained with cross-entropy on the
  run's data by `sora_jax.training.loop.train` from the named config `supervised` into
  `<workdir>/baselines/supervised`;
- bag_of_words: the run's own config (objective, data, budget, seed) with text.tower=bag_of_words,
  trained into `<workdir>/baselines/bag_of_words`: what the pretrained text tower is worth;
- generate_mse (generator runs, evaluation/generation.py): the deterministic MSE decoder.
A trained baseline is reused when its folder already holds the final checkpoint.
"""

from __future__ import annotations

import copy
import logging

import jax
import jax.numpy as jnp

from sora_jax import storage
from sora_jax.config import derive
from sora_jax.errors import Stopped
from sora_jax.models import efficientnet, i3d, init_variables
from sora_jax.training import checkpoint
from sora_jax.training.loop import train

log = logging.getLogger("sora_jax.eval")


def random_variables(config):
  return init_variables(config, jax.random.PRNGKey(config.seed))


def pretrained_variables(config):
  """The run's architecture at step 0 of a model.pretrained run: the ImageNet frame encoder, the rest
  initialised from config.seed (what the run started from)."""
  variables = random_variables(config)
  params = dict(variables["params"], **efficientnet.pretrained_params(config.model))
  return dict(variables, params=params)


def i3d_size(config) -> int:
  return int(config.eval.i3d_frame_size) or int(config.data.frame_size)


def i3d_apply(config):
  """-> apply(variables, uint8 [N, T, H, W, 3]) -> {'pooled', 'embedding'}: both I3D's pooled Mixed_5c
  (the protocols read either), the frames resized (bilinear) to `i3d_size(config)`."""
  model = i3d.InceptionI3D(dtype=jnp.dtype(config.model.dtype))
  size = i3d_size(config)

  def apply(variables, video):
    if video.shape[2:4] != (size, size):
      video = jax.image.resize(video.astype(jnp.float32), video.shape[:2] + (size, size, 3), "bilinear")
    feats = i3d.features(model, variables, video)
    return {"pooled": feats, "embedding": feats}
  return apply


def supervised_config(config, info: dict):
  """`config.derive.supervised_baseline` for the run's data (its number of classes)."""
  return derive.supervised_baseline(config, int(info["num_classes"]))


def bag_of_words_config(config):
  """The run's config with the text tower swapped for a bag of words trained from scratch."""
  bow = copy.deepcopy(config)
  bow.text.tower = "bag_of_words"
  bow.eval.baselines = ()
  return bow


def trained(name: str, cfg, workdir) -> str:
  """Trains baseline `name` with `cfg` into <workdir>/baselines/<name> unless it is there; -> its folder."""
  out = storage.path(workdir) / "baselines" / name
  done = None
  if checkpoint.checkpoint_dir(out).is_dir():
    done = checkpoint.make_manager(out, async_save=False).latest_step()
  if done != cfg.train.num_steps:
    log.info("training the %s baseline (%d steps) into %s", name, cfg.train.num_steps, out)
    step = int(train(cfg, out).step)
    if step < cfg.train.num_steps:  # the loop saved and returned early (SIGTERM, Ctrl-C): nothing to score yet
      raise Stopped(f"the {name} baseline stopped at step {step} of {cfg.train.num_steps}; its checkpoint in "
                    f"{out} is kept: rerun the same command to resume it")
  return out


def supervised_variables(config, workdir, info: dict):
  """Trains (or reuses) the supervised baseline; -> (its config, variables, step)."""
  return checkpoint.load_for_inference(trained("supervised", supervised_config(config, info), workdir))


def bag_of_words_run(config, workdir):
  """Trains (or reuses) the bag-of-words baseline; -> (config, variables, objective params, step)."""
  return checkpoint.load_run(trained("bag_of_words", bag_of_words_config(config), workdir))
