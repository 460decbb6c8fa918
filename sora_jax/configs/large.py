"""A pod-scale example (validated and built abstractly by the tests, not trained here):
ResNet-34 on every frame + a 4-layer Transformer over 16 frames of 224x224, bf16 compute with
float32 parameters, InfoNCE + predictive coding over a global batch of 1024 clips with LARS.

Run one process per host (TPU pods and SLURM are detected; otherwise pass --coordinator_address,
--num_processes and --process_id) with --config.data.name=tfrecord:/path/to/shards.
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
  c.data.augment.blur_prob = 0.5
  c.data.augment.solarize_prob = 0.2
  c.data.shuffle_buffer = 8192

  c.model.frame_encoder = "resnet"
  c.model.resnet_depth = 34
  c.model.width = 1.0
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
  c.model.remat = True
  c.model.dtype = "bfloat16"

  c.objective.name = "infonce+predictive"
  c.objective.temperature = 0.1
  c.objective.predictive_weight = 0.5

  c.train.batch_size = 1024  # global
  c.train.num_steps = 200_000
  c.train.checkpoint_every = 2000
  c.train.log_every = 100
  c.train.quick_eval_every = 5000

  c.optimizer.name = "lars"
  c.optimizer.learning_rate = 4.8  # 0.3 x batch / 256, as SimCLR/CVRL
  c.optimizer.warmup_steps = 5000
  c.optimizer.weight_decay = 1e-6
  c.optimizer.clip_norm = 0.0

  c.mesh.data = -1
  c.mesh.fsdp = 1
  c.eval.batch_size = 256
  return c
