"""Default run: a small encoder pretrained with InfoNCE on built-in `moving_shapes`, CPU minutes.

Every tool and script relies on these field names (DESIGN.md, config skeleton). Other configs
start from this one and change what they need.
"""

import ml_collections


def get_config() -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  c.seed = 0

  # Input: see sora_jax/data. Frames are uint8 [B, V, T, H, W, 3] on the host.
  c.data = ml_collections.ConfigDict()
  c.data.name = "moving_shapes"  # moving_shapes | moving_digits | tfrecord:PATH | tfds:NAME/CONFIG
  c.data.data_dir = ""  # "" = ~/.cache/sora_jax/datasets (or $SORA_JAX_DATA_DIR)
  c.data.num_frames = 8
  c.data.frame_size = 32
  c.data.stride = 1
  c.data.num_views = 2
  c.data.view_gap = "uniform"  # uniform | decreasing (CVRL)
  c.data.sampling = "random"  # where training views start: random | uniform (evenly spaced) | centred
  c.data.train_split = "train"
  c.data.eval_split = "test"
  c.data.augment = ml_collections.ConfigDict()
  c.data.augment.crop_scale = (0.7, 1.0)  # smaller crops often cut the object out
  # Horizontal flips swap left and right motion; drawn per view, they teach InfoNCE to ignore the
  # direction of motion. Leave them off wherever direction matters.
  c.data.augment.flip_prob = 0.0
  c.data.augment.color_jitter_prob = 0.8
  c.data.augment.color_jitter_strength = 1.0  # used when color_jitter = ()
  # (brightness, contrast, saturation, hue) maxima; () = SimCLR's (0.8, 0.8, 0.8, 0.2) x strength.
  # Any hue, so object colour cannot identify a video, but mild brightness: SimCLR's additive 0.8
  # turns these dark frames black or white and hides the object.
  c.data.augment.color_jitter = (0.2, 0.3, 0.8, 0.5)
  c.data.augment.per_frame_jitter = False
  c.data.augment.grayscale_prob = 0.2
  c.data.augment.blur_prob = 0.0
  c.data.augment.solarize_prob = 0.0
  c.data.shuffle_buffer = 1024
  c.data.num_parallel_calls = -1  # -1 = tf.data.AUTOTUNE
  c.data.prefetch = 2

  # Encoder: see sora_jax/models.
  c.model = ml_collections.ConfigDict()
  c.model.frame_encoder = "seed_cnn"  # seed_cnn | resnet
  c.model.width = 0.25  # channel multiplier of the frame encoder (1.0 = 64/128/256)
  c.model.resnet_depth = 18
  c.model.resnet_stem = "small"  # small (3x3 stride 1, frames <= 64 px) | imagenet (7x7 stride 2 + max-pool)
  # rgb | rgb+diff: each frame with its difference from the previous one, so the per-frame CNN sees
  # motion; its global average pool would otherwise keep what is in a frame but not where.
  c.model.frame_input = "rgb+diff"
  c.model.frame_pool = "mean"  # mean (global average: what, not where) | flatten (keeps the final grid)
  c.model.norm = "group"  # none | group | batch (batch makes batch statistics mutable)
  c.model.temporal = "lstm"  # lstm | gru | transformer | none
  c.model.hidden_size = 64
  c.model.num_layers = 1
  c.model.bidirectional = False
  c.model.num_heads = 4
  c.model.causal = False
  c.model.remat = False
  c.model.scan_layers = False
  c.model.pooling = "mean"  # last | mean | cls
  c.model.head_hidden = 128
  c.model.head_layers = 2
  c.model.embed_dim = 64
  c.model.num_classes = 0  # > 0 adds a linear classifier head
  c.model.predict_steps = 0  # > 0 adds the DPC predictor: from sequence[t], predict steps t+1..t+K
  c.model.input_mean = (0.5, 0.5, 0.5)  # after scaling uint8 to [0, 1]
  c.model.input_std = (0.25, 0.25, 0.25)
  c.model.dtype = "float32"  # compute dtype; parameters stay float32

  # Objective: see sora_jax/objectives.
  c.objective = ml_collections.ConfigDict()
  c.objective.name = "infonce"  # infonce | predictive | supervised | infonce+predictive
  c.objective.temperature = 0.1
  c.objective.learn_temperature = False
  c.objective.infonce_weight = 1.0
  c.objective.predictive_weight = 1.0
  c.objective.supervised_weight = 1.0

  c.train = ml_collections.ConfigDict()
  c.train.batch_size = 64  # global; 64 learns motion in a few hundred steps where 32 needs ~700
  c.train.num_steps = 600  # ~0.85 s/step at batch 64 on 2 idle CPU cores: ~8-9 min
  c.train.grad_accum_steps = 1
  c.train.checkpoint_every = 100
  c.train.keep_checkpoints = 3
  c.train.log_every = 10
  c.train.quick_eval_every = 100  # kNN accuracy on a small labelled split; 0 = off

  c.optimizer = ml_collections.ConfigDict()
  c.optimizer.name = "adamw"  # adamw | sgd | lars
  c.optimizer.learning_rate = 3e-3
  c.optimizer.warmup_steps = 10
  c.optimizer.schedule = "cosine"  # cosine | constant
  c.optimizer.weight_decay = 1e-4
  c.optimizer.momentum = 0.9
  c.optimizer.clip_norm = 1.0  # 0 = no clipping

  c.mesh = ml_collections.ConfigDict()
  c.mesh.data = -1  # -1 = all devices not used by other axes
  c.mesh.fsdp = 1

  c.eval = ml_collections.ConfigDict()
  c.eval.batch_size = 64
  c.eval.num_clips = 1
  c.eval.num_crops = 1
  c.eval.knn_k = 20
  c.eval.knn_temperature = 0.07
  c.eval.retrieval_ks = (1, 5, 10, 20)
  c.eval.mean_center = False
  c.eval.baselines = ("random", "supervised")  # random | supervised (trained into <workdir>/baselines)
  c.eval.feature = "pooled"  # pooled (temporal model output) | embedding (projection head output)
  c.eval.probe_learning_rates = (0.01, 0.1)  # linear probe sweep, chosen on the validation split
  c.eval.probe_weight_decays = (0.0, 1e-4, 1e-3)
  c.eval.probe_steps = 300  # full-batch Adam steps per probe
  c.eval.val_fraction = 0.2  # held out of train when the dataset has no validation split
  c.eval.max_examples = 0  # cap on embedded train clips; 0 = all
  c.eval.finetune_epochs = 1  # 0 = no fine-tuning
  c.eval.finetune_learning_rate = 1e-3
  c.eval.finetune_head_learning_rate = 1e-2  # the new classifier head learns 10x faster than the encoder
  c.eval.supervised_steps = 300  # steps of the supervised baseline; 0 = configs/supervised.py's
  c.eval.quick_examples = 256  # clips per side of the quick kNN eval during training
  c.eval.projection = "pca"  # pca | tsne (2-D plot of the test embeddings)
  return c
