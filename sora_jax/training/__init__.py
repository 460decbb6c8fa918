"""sora_jax.training: train state, the sharded step, the loop, checkpoints (see docs/training.md).

`loop.train(config, workdir, *, hooks=()) -> TrainState`; `checkpoint.load_for_inference(workdir, step=None)`.
"""
