"""A pod-scale example (validated and built abstractly by the tests, run on one H200 by
bench/accelerator.py): ResNet-34 on every frame + a 4-layer Transformer over 16 frames of 224x224,
bf16 compute with float32 parameters, InfoNCE + predictive coding over a global batch of 1024 clips
with LARS.

Run one process per host (TPU pods and SLURM are detected; otherwise pass --coordinator-address,
--num-processes and --process-id) with --config.data.name=tfrecord:/path/to/shards.

Every field that matters at this scale is set here rather than inherited from the CPU demo's
defaults (a 3x3 stride-1 stem meant for <= 64 px frames ran ResNet-34's first stage at 224 x 224:
228 GB of temporaries per device). Measured on one H200 (bench/accelerator.py, docs/benchmarks.md):
8 clips per device take 5.18 GB and 28 ms per step with nothing rematerialised; `remat_frames=time`
cuts that to 1.07 GB but runs 3.3x slower (91.5 ms), so it is for devices that cannot hold the
activations. XLA:CPU's memory analysis (`sora-jax model-summary --config large --per-device-batch 8`)
overstates an accelerator's need about 8x (40 GB for the same step).
"""

from sora_jax.config import defaults


def get_config():
  c = defaults()
  c.data.name = "tfrecord:/data/kinetics400/shards"  # made by `sora-jax prepare`
  c.data.num_frames = 16
  c.data.frame_size = 224
  c.data.stride = 2
  c.data.num_views = 2
  c.data.view_gap = "decreasing"
  c.data.sampling = "random"
  c.data.augment.crop_scale = (0.3, 1.0)  # CVRL's random resized crop on real video
  c.data.augment.flip_prob = 0.5
  c.data.augment.color_jitter = ()  # SimCLR's (0.8, 0.8, 0.8, 0.2) x strength: real video is not dark
  c.data.augment.color_jitter_strength = 1.0
  c.data.augment.grayscale_prob = 0.2
  c.data.augment.blur_prob = 0.5
  c.data.augment.solarize_prob = 0.2
  # The colour ops on the accelerators: on the host they cost ~2/3 of its CPU time per clip, and one GPU
  # steps faster than tens of cores augment (bench/pod_input.py); the host still decodes, crops and flips.
  c.data.augment.on = "device"

  c.model.frame_encoder = "resnet"
  c.model.resnet_depth = 34
  c.model.width = 1.0
  c.model.resnet_stem = "imagenet"  # 7x7 stride 2 + max-pool: stage 1 at 56 x 56
  c.model.frame_input = "rgb"
  c.model.frame_pool = "mean"
  c.model.remat_frames = "none"  # 5.18 GB/device at 8 clips on an H200; "time" if a device cannot hold it
  c.model.norm = "group"  # no cross-device batch statistics to synchronise
  c.model.temporal = "transformer"
  c.model.causal = True  # the predictive term needs sequence[t] blind to t+1..
  c.model.hidden_size = 768
  c.model.num_layers = 4
  c.model.num_heads = 12
  c.model.pooling = "mean"
  c.model.head_hidden = 2048
  c.model.embed_dim = 256
  c.model.predict_steps = 4
  c.model.remat = False  # the Transformer over 16 time steps: its activations are small
  c.model.dtype = "bfloat16"

  c.objective.name = "infonce+predictive"
  c.objective.temperature = 0.1
  c.objective.predictive_weight = 0.5

  c.train.batch_size = 1024  # global: 8 clips per device on 128 chips (mesh.data = all of them)
  c.train.grad_accum_steps = 1
  c.train.num_steps = 200_000
  c.train.checkpoint_every = 2000
  c.train.log_every = 100
  c.train.quick_eval_every = 5000

  c.optimizer.name = "lars"
  c.optimizer.learning_rate = 4.8  # 0.3 x batch / 256, as SimCLR/CVRL
  c.optimizer.warmup_steps = 5000
  c.optimizer.weight_decay = 1e-6
  c.optimizer.clip_norm = 0.0

  c.mesh.data = -1  # every device holds batch rows
  c.mesh.fsdp = 1  # ~56M parameters: the state fits each device, nothing to shard
  c.eval.batch_size = 256
  return c
