"""sora_jax.training: train state, the sharded step, the loop, checkpoints (see README "Training").

`loop.train(config, workdir, *, hooks=()) -> TrainState`; `checkpoint.load_for_inference(workdir, step=None)`.
"""
