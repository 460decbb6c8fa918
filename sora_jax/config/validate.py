"""The one check of a whole config, run where a config enters (command line, Python API, checkpoint).

Each field's own check comes from the schema; the rules below tie fields together, section by
section. Checks that need the device count (mesh.data=-1) run in `parallel.mesh.make_mesh`.
"""

from __future__ import annotations

from sora_jax.config import schema
from sora_jax.config.checks import as_names
from sora_jax.errors import ConfigError

TEXT_TOWER_LAYERS = 6  # all-MiniLM-L6-v2


def validate(config, sections=None):
  """Raises ConfigError naming the field and the fix; returns `config` unchanged when it is valid.

  sections: only these top-level sections (and `seed`); default all.
  """
  wanted = tuple(sections or schema.SECTIONS)
  for section in wanted:
    if section not in config:
      raise ConfigError(f"config has no {section!r} section; start from a named config (sora-jax config --list)")
  unknown = sorted(set(_leaves(config.to_dict())) - set(schema.BY_NAME))
  if unknown and sections is None:
    raise ConfigError(f"unknown config field {unknown[0]!r}{f' (and {len(unknown) - 1} more)' if len(unknown) > 1 else ''}"
                      "; every field is declared in sora_jax/config/schema.py (sora-jax config --show default)")
  for f in schema.FIELDS:
    top = f.name.split(".")[0]
    if top in wanted or "." not in f.name:
      f.check(f.name, _get(config, f.name))
  for section in wanted:
    _RULES[section](config)
  return config


def _leaves(d: dict, prefix: str = ""):
  for k, v in d.items():
    if isinstance(v, dict):
      yield from _leaves(v, f"{prefix}{k}.")
    else:
      yield f"{prefix}{k}"


def _get(config, dotted: str):
  node = config
  for part in dotted.split("."):
    if part not in node:
      raise ConfigError(f"config field {dotted!r} is missing; start from a named config (sora-jax config --list)")
    node = node[part]
  return node


def mask_length(num_frames: int, ratio: float, blocks: int) -> int:
  """latent_mask: the length of each hidden block (round(ratio x T / blocks))."""
  return int(round(ratio * num_frames / blocks))


def terms(objective_name: str) -> tuple[str, ...]:
  """'infonce+predictive' -> ('infonce', 'predictive')."""
  return tuple(objective_name.split("+"))


def batch_divisible(batch: int, accum: int, shards: int, what: str) -> None:
  """The global (micro-)batch must split evenly over the devices that hold batch rows."""
  if batch % (accum * shards):
    raise ConfigError(f"config.train.batch_size={batch} is not divisible by the data axis ({what}={shards}"
                      f"{f' x grad_accum_steps={accum}' if accum > 1 else ''}); use a multiple of "
                      f"{accum * shards}, e.g. --config.train.batch_size={max(1, batch // (accum * shards) + 1) * accum * shards}")


def _data(config) -> None:
  if config.data.num_parallel_calls == 0:
    raise ConfigError("config.data.num_parallel_calls=0 must be -1 (AUTOTUNE) or >= 1")
  d = config.data
  if d.view_strides and len(d.view_strides) != d.num_views:
    raise ConfigError(f"config.data.view_strides={tuple(d.view_strides)} has {len(d.view_strides)} strides for "
                      f"data.num_views={d.num_views} views; give one per view, or () for data.stride everywhere")
  if d.view_strides and (d.sampling == "uniform" or d.view_gap != "uniform"):
    raise ConfigError("config.data.view_strides places each view on its own (random or centred), so "
                      "data.sampling=uniform and data.view_gap=decreasing do not apply; set "
                      "--config.data.sampling=random --config.data.view_gap=uniform or data.view_strides=()")


def _model(config) -> None:
  m = config.model
  if m.temporal == "transformer" and m.hidden_size % m.num_heads:
    raise ConfigError(f"config.model.hidden_size={m.hidden_size} must be divisible by "
                      f"config.model.num_heads={m.num_heads}")
  if m.bidirectional and m.temporal not in ("lstm", "gru"):
    raise ConfigError(f"config.model.bidirectional=True needs config.model.temporal in 'lstm', 'gru' "
                      f"(got {m.temporal!r}); a non-causal transformer already sees both directions")
  if m.bidirectional and m.causal:
    raise ConfigError("config.model.causal=True contradicts config.model.bidirectional=True; set one to False")
  if m.causal and m.temporal not in ("transformer", "lstm", "gru"):
    raise ConfigError(f"config.model.causal=True needs a temporal model; config.model.temporal={m.temporal!r}")
  if m.remat_frames == "block" and m.frame_encoder not in ("resnet", "vit", "tubelet"):
    raise ConfigError("config.model.remat_frames='block' needs config.model.frame_encoder='resnet', 'vit' or "
                      "'tubelet' (the "
                      f"{m.frame_encoder} has no blocks); use remat_frames='time' or 'none'")
  if m.remat_policy != "nothing" and not (m.remat and m.temporal == "transformer") and not (
      m.remat_frames == "block" and m.frame_encoder in ("vit", "tubelet")):
    raise ConfigError(f"config.model.remat_policy={m.remat_policy!r} applies to recomputed Transformer blocks, and "
                      "this model has none; set config.model.remat_frames='block' with frame_encoder='vit' (or "
                      "'tubelet'), or "
                      "model.remat=True with temporal='transformer', or remat_policy='nothing'")
  if m.norm == "ws" and m.frame_encoder != "resnet":
    raise ConfigError(f"config.model.norm='ws' (normalisation-free blocks) needs config.model.frame_encoder='resnet', "
                      f"not {m.frame_encoder!r}; use norm='group' or 'none'")
  if m.frame_pool == "cls" and m.frame_encoder != "vit":
    raise ConfigError(f"config.model.frame_pool='cls' needs config.model.frame_encoder='vit' (a {m.frame_encoder} "
                      "has no CLS token); use frame_pool='mean'")
  if m.frame_encoder in ("vit", "tubelet"):
    _vit(config)
  if m.frame_encoder == "tubelet":
    _tubelet(config)
  if m.actors and m.remat_frames == "time":
    raise ConfigError("config.model.actors=True pools the frame encoder's feature maps at the actors' boxes, which "
                      "remat_frames='time' does not keep; use config.model.remat_frames='none' or 'block'")
  if m.frame_input in ("two_stream", "two_tower") and (m.actors or m.pretrained):
    raise ConfigError(f"config.model.frame_input={m.frame_input!r} does not combine with model.actors or "
                      "model.pretrained (the actors' boxes and the ImageNet weights read one frame encoder); "
                      "use frame_input='rgb+diff'")
  if m.time_reversal and (m.frame_input == "two_stream" or m.actors or m.latent_predict):
    raise ConfigError("config.model.time_reversal=True is built for frame_input rgb, rgb+diff and two_tower, "
                      f"without model.actors or model.latent_predict; got frame_input={m.frame_input!r}, "
                      f"actors={m.actors}, latent_predict={m.latent_predict}")
  if m.frame_input == "two_tower" and m.embed_dim % 2:
    raise ConfigError(f"config.model.frame_input='two_tower' splits config.model.embed_dim={m.embed_dim} between "
                      "its two towers; make it even")
  if m.remat_frames == "time" and m.norm == "batch":
    raise ConfigError("config.model.remat_frames='time' computes frames one time step at a time, which changes "
                      "batch statistics; use config.model.norm='group' (or 'none') or remat_frames='none'")
  if m.pretrained and (m.frame_encoder, m.norm, m.width) != ("efficientnet_lite0", "none", 1.0):
    raise ConfigError("config.model.pretrained=True needs config.model.frame_encoder='efficientnet_lite0', "
                      f"model.norm='none' (its batch norms are folded) and model.width=1.0; got {m.frame_encoder!r}, "
                      f"{m.norm!r}, {m.width}")
  if m.pooling == "cls" and m.temporal == "none":
    raise ConfigError("config.model.pooling='cls' needs a temporal model to read the CLS token; "
                      "choose config.model.pooling in 'last', 'mean' or set config.model.temporal")


def _vit(config) -> None:
  m, size = config.model, config.data.frame_size
  if size % m.vit_patch:
    good = max(m.vit_patch, size // m.vit_patch * m.vit_patch)
    raise ConfigError(f"config.data.frame_size={size} does not split into config.model.vit_patch={m.vit_patch} "
                      f"px patches; set --config.data.frame_size={good} or a vit_patch that divides {size}")
  if m.actors and m.frame_pool == "cls":
    raise ConfigError("config.model.actors=True pools the ViT's patch grid at the actors' boxes; the CLS token has "
                      "no place in it: use config.model.frame_pool='mean'")


def _tubelet(config) -> None:
  m, frames = config.model, config.data.num_frames
  if frames % m.tubelet_frames:
    good = max(m.tubelet_frames, frames // m.tubelet_frames * m.tubelet_frames)
    raise ConfigError(f"config.data.num_frames={frames} does not split into config.model.tubelet_frames="
                      f"{m.tubelet_frames} frame tubelets; set --config.data.num_frames={good} or a tubelet_frames "
                      f"that divides {frames}")
  if m.frame_pool != "mean" or m.remat_frames == "time" or m.actors:
    raise ConfigError("config.model.frame_encoder='tubelet' gives each frame its tubelet's mean over the clip's "
                      "space-time tokens: it needs model.frame_pool='mean', remat_frames 'none' or 'block' and no "
                      f"model.actors (got frame_pool={m.frame_pool!r}, remat_frames={m.remat_frames!r}, "
                      f"actors={m.actors}); use frame_encoder='vit' for those")
  reads = [t for t in terms(config.objective.name) if t in ("predictive", "latent_mask", "appearance")]
  if reads or m.predict_steps or m.latent_predict:
    raise ConfigError("config.model.frame_encoder='tubelet' attends across the whole clip, so each frame's "
                      "features have seen the future, hidden and other-half frames that objective terms "
                      "predictive, latent_mask and appearance (and model.predict_steps, model.latent_predict) "
                      f"must not see (got objective {config.objective.name!r}, predict_steps={m.predict_steps}, "
                      f"latent_predict={m.latent_predict}); use frame_encoder='vit' (one frame at a time) or "
                      "another objective")


def _sees_ahead(m) -> bool:
  """The temporal model's output at t has seen frames after t."""
  return m.bidirectional or (m.temporal == "transformer" and not m.causal)


def _predicts_a_future(config, name: str, field: str, what: str) -> None:
  """A DPC term: K = config.model.<field> future steps, predicted from a state that has not seen them."""
  m = config.model
  if getattr(m, field) >= config.data.num_frames:
    raise ConfigError(f"config.model.{field}={getattr(m, field)} must be < "
                      f"data.num_frames={config.data.num_frames} (there must be a future to predict)")
  if _sees_ahead(m):
    raise ConfigError(f"objective {name!r} predicts {what}, which must not see frames "
                      "after t; set --config.model.bidirectional=False (and model.causal=True for a transformer)")


def _objective(config) -> None:
  name, m = config.objective.name, config.model
  if "generate" in terms(name) and len(terms(name)) > 1:
    raise ConfigError(f"objective {name!r}: generate trains a generator on a frozen encoder and combines with no "
                      "other term; set --config.objective.name=generate")
  pairwise = [t for t in terms(name) if t in ("infonce", "moco", "byol", "actor_infonce", "actor_appearance", "appearance")]
  if pairwise and config.data.num_views < 2:
    raise ConfigError(f"config.data.num_views={config.data.num_views} but objective {name!r} needs >= 2 views "
                      "of each video; set --config.data.num_views=2 or use objective.name='predictive'")
  if "predictive" in terms(name):
    if m.predict_steps < 1:
      raise ConfigError(f"objective {name!r} needs the DPC predictor; set --config.model.predict_steps=2 (>= 1)")
    _predicts_a_future(config, name, "predict_steps", "the future from sequence[t]")
  if "video_text" in terms(name) and m.text_embed_dim < 1:
    raise ConfigError(f"objective {name!r} needs the video side of the video-text space; set "
                      "--config.model.text_embed_dim=64 (>= 1)")
  if "actor_infonce" in terms(name) and not m.actors:
    raise ConfigError(f"objective {name!r} contrasts actors; set --config.model.actors=True (and train on data "
                      "with tracks, e.g. --config.data.name=moving_actors)")
  halves = [t for t in terms(name) if t in ("appearance", "actor_appearance")]
  if (halves or m.actor_appearance) and config.data.num_frames < 2:
    raise ConfigError(f"config.data.num_frames={config.data.num_frames}: "
                      f"{'objective ' + repr(halves[0]) if halves else 'model.actor_appearance'} averages each view's "
                      "first and second half of its frames; use data.num_frames >= 2")
  if "actor_appearance" in terms(name) and not (m.actors and m.actor_appearance):
    raise ConfigError(f"objective {name!r} contrasts each actor's appearance; set --config.model.actors=True and "
                      "--config.model.actor_appearance=True")
  if "actor_predictive" in terms(name):
    if not m.actors or m.actor_predict_steps < 1:
      raise ConfigError(f"objective {name!r} predicts each track's future; set --config.model.actors=True and "
                        "--config.model.actor_predict_steps=2 (>= 1)")
    _predicts_a_future(config, name, "actor_predict_steps", "a track's future from its state at t")
  if "latent_mask" in terms(name):
    if not m.latent_predict:
      raise ConfigError(f"objective {name!r} predicts hidden time steps; set --config.model.latent_predict=True")
    hidden = mask_length(config.data.num_frames, config.objective.mask_ratio, config.objective.mask_blocks)
    if hidden < 1 or hidden * config.objective.mask_blocks >= config.data.num_frames:
      raise ConfigError(f"config.objective.mask_ratio={config.objective.mask_ratio} with mask_blocks="
                        f"{config.objective.mask_blocks} hides {hidden} step(s) per block of data.num_frames="
                        f"{config.data.num_frames}; hide at least one step and leave one visible")
  if m.time_reversal and not {"infonce", "generate"} & set(terms(name)):  # (a generator adopts an encoder's model)
    raise ConfigError(f"config.model.time_reversal=True adds the reversed clips to objective infonce, which "
                      f"objective {name!r} does not have; add it (e.g. --config.objective.name={name}+infonce) or "
                      "set time_reversal=False")
  if "supervised" in terms(name) and m.num_classes < 1:
    raise ConfigError(f"objective {name!r} needs a classifier; set --config.model.num_classes to the "
                      "dataset's number of classes")


def _train(config) -> None:
  t = config.train
  if t.batch_size % t.grad_accum_steps:
    raise ConfigError(f"config.train.batch_size={t.batch_size} is not divisible by train.grad_accum_steps="
                      f"{t.grad_accum_steps}; make the batch a multiple of the accumulation steps")


def _optimizer(config) -> None:
  o, total = config.optimizer, config.train.num_steps
  if o.cooldown_steps and o.schedule != "constant":
    raise ConfigError(f"config.optimizer.cooldown_steps={o.cooldown_steps} ends a constant rate, but "
                      f"optimizer.schedule={o.schedule!r} already decays; set schedule=constant or cooldown_steps=0")
  if o.cooldown_steps and min(o.warmup_steps, total) + o.cooldown_steps > total:
    raise ConfigError(f"config.optimizer.warmup_steps={o.warmup_steps} + cooldown_steps={o.cooldown_steps} exceed "
                      f"train.num_steps={total}; shorten it (--config.optimizer.cooldown_steps=N) or train longer")


def _mesh(config) -> None:
  data, fsdp = config.mesh.data, config.mesh.fsdp
  if data == 0:
    raise ConfigError("config.mesh.data=0 is not a device count; use -1 (all devices) or a positive number")
  if data > 0:
    batch_divisible(config.train.batch_size, config.train.grad_accum_steps, data * fsdp,
                    f"mesh.data*mesh.fsdp={data}*{fsdp}")


def _text(config) -> None:
  t = config.text
  if t.train_layers and t.tower != "minilm":
    raise ConfigError(f"config.text.train_layers={t.train_layers} trains layers of the pretrained tower, but "
                      f"text.tower={t.tower!r} has none; set text.tower=minilm or text.train_layers=0")
  if t.train_layers > TEXT_TOWER_LAYERS:
    raise ConfigError(f"config.text.train_layers={t.train_layers}: the pretrained tower has {TEXT_TOWER_LAYERS} "
                      f"layers; use 0..{TEXT_TOWER_LAYERS}")


def _generate(config) -> None:
  g, names = config.generate, terms(config.objective.name)
  if "generate" not in names:
    return
  if not g.encoder_workdir:
    raise ConfigError("objective generate needs a trained encoder run: set --config.generate.encoder_workdir=RUN "
                      "(a workdir of `sora-jax train`)")
  if config.train.grad_accum_steps > 1:
    raise ConfigError(f"config.train.grad_accum_steps={config.train.grad_accum_steps}: the generate term has no "
                      "micro-batched form yet (its loss would see the whole batch at once); lower train.batch_size "
                      "and set grad_accum_steps=1")
  if config.data.frame_size % g.patch_size:
    raise ConfigError(f"config.generate.patch_size={g.patch_size} must divide data.frame_size="
                      f"{config.data.frame_size}; e.g. --config.generate.patch_size=4")
  if g.width % g.num_heads:
    raise ConfigError(f"config.generate.width={g.width} must be divisible by generate.num_heads={g.num_heads}")
  if g.condition == "aligned" and config.model.text_embed_dim < 1:
    raise ConfigError("config.generate.condition='aligned' needs an encoder trained with video_text (a video-text "
                      "space); use an encoder run of --config text, or generate.condition=embedding")


def _eval(config) -> None:
  wanted = as_names(config.eval.baselines)
  generating = "generate" in terms(config.objective.name)
  if generating and set(wanted) - {"generate_mse"}:
    raise ConfigError(f"eval.baselines={tuple(wanted)!r}: a generator run's only baseline is generate_mse; "
                      "set --config.eval.baselines=generate_mse (or ())")
  if "generate_mse" in wanted and not generating:
    raise ConfigError("eval.baselines has generate_mse, the generator's baseline, but objective "
                      f"{config.objective.name!r} trains an encoder; drop it from --config.eval.baselines")
  if "bag_of_words" in wanted and "video_text" not in terms(config.objective.name):
    raise ConfigError(f"eval.baselines has bag_of_words, a text baseline, but objective {config.objective.name!r} "
                      "has no video_text term; drop it from --config.eval.baselines")


_RULES = {"data": _data, "model": _model, "objective": _objective, "text": _text, "generate": _generate, "train": _train,
          "optimizer": _optimizer, "mesh": _mesh, "eval": _eval}
