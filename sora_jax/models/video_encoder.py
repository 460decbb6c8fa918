"""VideoEncoder: frame encoder on every frame (or the tubelet encoder on the clip) -> temporal model -> heads,
built from `config.model`."""

from __future__ import annotations

from typing import Any

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections

from sora_jax.config import validate
from sora_jax.errors import DataError
from sora_jax.linalg import l2_normalize
from sora_jax.models.actors import ActorTracks
from sora_jax.models.frame_encoders import make_frame_encoder, map_frame_encoder
from sora_jax.models.heads import Classifier, Predictor, ProjectionHead
from sora_jax.models.temporal import make_temporal
from sora_jax.models.tubelet import TubeletViT


def check_video(video) -> None:
  """Raises DataError unless video is [B, T, H, W, 3]."""
  shape = tuple(getattr(video, "shape", ()))
  if len(shape) != 5 or shape[-1] != 3:
    raise DataError(f"video has shape {shape}; the model expects frames [B, T, H, W, 3] "
                    "(batch, time, height, width, RGB); add the missing axis or drop the extra one")


def normalize_frames(video, mean, std, dtype):
  """uint8 [0, 255] (or float in [0, 1]) -> (x - mean) / std in `dtype`, on the device."""
  x = video.astype(jnp.float32)
  if jnp.issubdtype(video.dtype, jnp.integer):
    x = x / 255.0
  x = (x - jnp.asarray(mean, jnp.float32)) / jnp.asarray(std, jnp.float32)
  return x.astype(dtype)


def frame_differences(x, hidden=None):
  """[B, T, H, W, C] -> [B, T, H, W, C]: each frame's difference from the previous one (zero for the
  first): local motion for a per-frame encoder (TSN's RGB difference). `hidden`: bool [B, T] or None;
  the difference is zero after a hidden step too (it would show the hidden frame)."""
  diff = jnp.concatenate([jnp.zeros_like(x[:, :1]), x[:, 1:] - x[:, :-1]], axis=1)
  if hidden is not None:
    after_hidden = jnp.concatenate([jnp.zeros_like(hidden[:, :1]), hidden[:, :-1]], axis=1)
    diff = jnp.where(after_hidden[:, :, None, None, None], jnp.zeros_like(diff), diff)
  return diff


def with_frame_differences(x, hidden=None):
  """[B, T, H, W, C] -> [B, T, H, W, 2C]: each frame with its difference from the previous one."""
  return jnp.concatenate([x, frame_differences(x, hidden)], axis=-1)


class VideoEncoder(nn.Module):
  """video [B, T, H, W, 3] (uint8 or float in [0, 1]) -> dict of outputs (see `__call__`).

  Parameters are float32; `config.model.dtype` is the compute dtype. The parameter tree does
  not depend on B or T.
  """
  model_config: ml_collections.ConfigDict
  unroll: int = 1  # scan unroll of the recurrent layers (speed only; same parameters)

  @nn.compact
  def __call__(self, video, train: bool = False, time_mask=None, boxes=None) -> dict[str, jax.Array]:
    """Returns frames [B,T,D], sequence [B,T,D'], pooled [B,D'], embedding [B,E] (unit norm),
    logits [B,C] when num_classes > 0, aligned [B,E_text] (unit norm) when text_embed_dim > 0, targets [B,T,E] and predictions [B,T,K,E] when predict_steps = K > 0,
    latent_predictions [B,T,D'] when latent_predict (objective latent_mask), tower_embeddings [B,2,E/2]
    (each unit norm; `embedding` is both side by side) when frame_input='two_tower', reversed_embedding
    [B,E] (the clip played backwards; unit norm; two_tower: the motion tower's, [B,E/2]) when
    time_reversal and train.

    time_mask: bool [B, T] or None; with model.latent_predict, the frame features of the True steps
    are replaced by a learned mask token before the temporal model (`frames` is the features before
    the token; with rgb+diff input the step after a hidden one gets no frame difference).
    boxes: float [B, A, T, 4] or None; with model.actors, each of A actors' box (x0, y0, x1, y1,
    normalised to the frame) in each frame adds actor_pooled [B, A, D'] and actor_embedding [B, A, E]
    (unit norm; models.actors). Absent actors' slots give numbers the caller masks.
    """
    m = self.model_config
    check_video(video)
    dtype = jnp.bfloat16 if m.dtype == "bfloat16" else jnp.float32
    b, t, h, w, c = video.shape
    x = rgb = normalize_frames(video, m.input_mean, m.input_std, dtype)
    hidden = time_mask if m.latent_predict else None
    if m.frame_input == "rgb+diff":
      x = with_frame_differences(x, hidden)
    frame_encoder, to_features = map_frame_encoder(m, dtype) if m.actors else (make_frame_encoder(m, dtype), None)
    if m.actors:  # the map for the actors' boxes, then the clip's pool (config.validate: never remat 'time')
      feats = frame_encoder(x.reshape(b * t, h, w, x.shape[-1]), train)  # time folded into batch
      maps, feats = feats.reshape((b, t) + feats.shape[1:]), to_features(feats)
      frames = feats.reshape(b, t, feats.shape[-1])
    else:
      frames = _frame_features(frame_encoder, x, train, m.remat_frames)
    towers = [("temporal", "projection")]
    if m.frame_input in ("two_stream", "two_tower"):  # a second encoder of the same kind (motion_encoder)
      motion = make_frame_encoder(m, dtype, name="motion_encoder")
      # two_tower's motion tower sees each frame with its difference (rgb+diff); on the differences
      # alone its motion fell to 70.5 on moving_digits (docs/results.md)
      diff = (with_frame_differences if m.frame_input == "two_tower" else frame_differences)(x, hidden)
      moves = _frame_features(motion, diff, train, m.remat_frames)
      if m.frame_input == "two_tower":  # ... and its own temporal model and head (and InfoNCE)
        towers.append(("motion_temporal", "motion_projection"))
      frames = jnp.concatenate([frames, moves], axis=-1)
    temporal_in = frames
    if m.latent_predict:
      token = self.param("mask_token", nn.initializers.normal(0.02), (frames.shape[-1],), jnp.float32)
      if time_mask is not None:
        temporal_in = jnp.where(time_mask[..., None], token.astype(frames.dtype), frames)
    inputs = jnp.split(temporal_in, len(towers), axis=-1)
    sequences, pools, embeddings = [], [], []
    for tower_in, (temporal_name, head_name) in zip(inputs, towers):
      temporal = make_temporal(m, dtype, self.unroll, name=temporal_name)
      head = ProjectionHead(m.head_hidden, m.head_layers, m.embed_dim // len(towers), dtype, name=head_name)
      sequence, pooled = temporal(tower_in)
      chex.assert_shape(sequence, (b, t, None))
      chex.assert_rank(pooled, 2)
      sequences.append(sequence), pools.append(pooled), embeddings.append(l2_normalize(head(pooled)))
    out = {}
    if len(towers) > 1:  # side by side, each at unit norm (the probes normalise the whole vector)
      sequence, pooled = jnp.concatenate(sequences, -1), jnp.concatenate([l2_normalize(p) for p in pools], -1)
      out["tower_embeddings"] = jnp.stack(embeddings, axis=1).astype(jnp.float32)  # [B, 2, E / 2]
    out.update({
        "frames": frames.astype(jnp.float32),
        "sequence": sequence.astype(jnp.float32),
        "pooled": pooled.astype(jnp.float32),
        "embedding": embeddings[0] if len(towers) == 1 else l2_normalize(jnp.concatenate(embeddings, -1)),
    })
    if m.time_reversal and train:  # the clip played backwards through the last tower (two_tower: the motion tower)
      if m.frame_input == "rgb" and m.frame_encoder != "tubelet":  # frames encoded one by one: the backwards
        backwards = inputs[-1][:, ::-1]  # clip's features are these, reversed
      else:  # rgb+diff: a frame's difference from the previous one changes backwards (and tubelets see
        encoder = motion if m.frame_input == "two_tower" else frame_encoder  # the order), so encode again
        clip = rgb[:, ::-1] if m.frame_input == "rgb" else with_frame_differences(rgb[:, ::-1])
        backwards = _frame_features(encoder, clip, train, m.remat_frames)
      out["reversed_embedding"] = l2_normalize(head(temporal(backwards)[1]))
    if m.num_classes > 0:
      out["logits"] = Classifier(m.num_classes, dtype, name="classifier")(pooled)
    if m.text_embed_dim > 0:
      out["aligned"] = l2_normalize(ProjectionHead(m.head_hidden, m.head_layers, m.text_embed_dim, dtype,
                                                   name="text_head")(pooled))
    if m.predict_steps > 0:
      out["targets"], out["predictions"] = Predictor(m.predict_steps, m.head_hidden, m.embed_dim, dtype,
                                                     name="predictor")(frames, sequence)
    if m.latent_predict:
      out["latent_predictions"] = ProjectionHead(m.head_hidden, 2, sequence.shape[-1], dtype,
                                                 name="latent_predictor")(sequence).astype(jnp.float32)
    if m.actors:
      if boxes is None and self.is_initializing():  # the parameters exist whatever the first call
        boxes = jnp.broadcast_to(jnp.asarray([0.0, 0.0, 1.0, 1.0]), (b, 1, t, 4))
      if boxes is not None:
        chex.assert_shape(boxes, (b, None, t, 4))
        out.update(ActorTracks(m, dtype, self.unroll, name="actors")(maps, boxes, train))
    chex.assert_shape(out["embedding"], (b, m.embed_dim))
    return out


def _frame_features(frame_encoder, x, train: bool, remat_frames: str):
  """[B, T, H, W, C] -> [B, T, D]: the frame encoder on every frame, time folded into the batch (or
  one time step at a time with remat_frames='time'); the tubelet encoder reads whole clips."""
  if isinstance(frame_encoder, TubeletViT):
    return frame_encoder(x, train)
  if remat_frames == "time":
    return _per_time_step(frame_encoder, x, train)
  b, t = x.shape[:2]
  return frame_encoder(x.reshape((b * t,) + x.shape[2:]), train).reshape(b, t, -1)


def _per_time_step(frame_encoder, x, train: bool):
  """[B, T, H, W, C] -> [B, T, D]: the frame encoder scanned over time, one step = frame t of every
  clip, each step recomputed in the backward pass. Only the input frames are kept for the backward
  and one step's activations are alive at a time (a scan orders the recomputation; XLA may hoist a
  plain checkpoint's recomputation next to the forward, as XLA:CPU does). Same parameters and the
  same features as the folded call: the frames are independent (no batch statistics)."""
  step = nn.remat(lambda mdl, carry, frame: (carry, mdl(frame, train)), prevent_cse=False)
  scan = nn.scan(step, variable_broadcast="params", split_rngs={"params": False}, in_axes=0, out_axes=0)
  _, feats = scan(frame_encoder, None, jnp.swapaxes(x, 0, 1))
  return jnp.swapaxes(feats, 0, 1)


def build_encoder(config, unroll: int = 1) -> VideoEncoder:
  """VideoEncoder from the WHOLE config, for callers outside the library: checks config.model first
  (ConfigError naming the field). Library code, whose config was validated where it entered, uses
  `build_encoder_unchecked`."""
  validate(config, sections=("model",))
  return build_encoder_unchecked(config, unroll)


def build_encoder_unchecked(config, unroll: int = 1) -> VideoEncoder:
  """VideoEncoder from an already validated config (reads config.model)."""
  return VideoEncoder(model_config=ml_collections.FrozenConfigDict(config.model), unroll=unroll)


def default_batch_shape(config, batch_size: int = 1) -> tuple[int, ...]:
  return (batch_size, config.data.num_frames, config.data.frame_size, config.data.frame_size, 3)


def init_variables(config, rng, batch_shape=None) -> dict[str, Any]:
  """Variables ({'params'} and, with norm='batch', {'batch_stats'}) from a dummy uint8 clip."""
  model = build_encoder(config)
  shape = tuple(batch_shape) if batch_shape is not None else default_batch_shape(config)
  dummy = jnp.zeros(shape, jnp.uint8)
  # Init runs once; LLVM's optimisation of the threefry-heavy init graph costs ~5x its compile time
  # on CPU for nothing, so compile it unoptimised (same values: the random bits are integer ops).
  traced = isinstance(rng, jax.core.Tracer)  # inside jit/eval_shape: options only apply at top level
  init = jax.jit(lambda r, v: model.init(r, v, train=False),
                 compiler_options=None if traced else {"xla_backend_optimization_level": 0})
  return dict(init(rng, dummy))
