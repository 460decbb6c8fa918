"""Mutations of how the encoder sees motion (frame differences, two towers, time reversal, tubelets), in
the form of mutant_table.MUTANTS, which includes them."""

MOTION_MUTANTS = {
    "frame-difference-shows-the-hidden-frame": (
        "sora_jax/models/video_encoder.py", "x = with_frame_differences(x, hidden)",
        "x = with_frame_differences(x)", ["tests/test_latent_mask.py"]),
    "two-towers-clipped-over-one-norm": (
        "sora_jax/training/optim.py", 'if opt.clip_per_tower and config.model.frame_input == "two_tower":',
        "if False:",
        ["tests/test_training_configs.py::"
         "test_two_towers_are_clipped_apart_so_one_gradient_does_not_shrink_the_others_step",
         "tests/test_training_configs.py::test_the_second_tower_trains_step_for_step_as_the_same_encoder_alone"]),
    "two-tower-infonce-on-the-joint-embedding": (
        "sora_jax/objectives/__init__.py", "  if \"tower_embeddings\" in outputs:  # model.frame_input=two_tower",
        "  if False:  # model.frame_input=two_tower",
        ["tests/test_models_motion.py::test_two_towers_each_embed_their_own_pathway_and_infonce_scores_each_apart"]),
    "time-reversal-embeds-the-clip-forward": (
        "sora_jax/models/video_encoder.py", "        backwards = inputs[-1][:, ::-1]", "        backwards = inputs[-1]",
        ["tests/test_models_motion.py::test_time_reversal_embeds_the_clip_played_backwards[rgb]"]),
    "time-reversal-reverses-the-forward-differences": (
        "sora_jax/models/video_encoder.py", "with_frame_differences(rgb[:, ::-1])", "with_frame_differences(rgb)[:, ::-1]",
        ["tests/test_models_motion.py::test_time_reversal_embeds_the_clip_played_backwards[rgb+diff]"]),
    "a-classifier-keeps-the-reversed-clips": (
        "sora_jax/config/derive.py", "  cfg.model.time_reversal = False  # (the reversed clips",
        "  pass  # (the reversed clips",
        ["tests/test_models_motion.py::test_infonce_counts_each_reversed_clip_as_a_video_of_its_own"]),
    "infonce-leaves-out-the-reversed-clips": (
        "sora_jax/objectives/__init__.py", "  if \"reversed_embedding\" in outputs:  # model.time_reversal",
        "  if False:  # model.time_reversal",
        ["tests/test_models_motion.py::test_infonce_counts_each_reversed_clip_as_a_video_of_its_own"]),
    "two-towers-reverse-the-rgb-tower": (
        "sora_jax/objectives/__init__.py", "    towers[1] = _with_reversed(towers[1], outputs)",
        "    towers[0] = _with_reversed(towers[0], outputs)",
        ["tests/test_models_motion.py::test_infonce_counts_each_reversed_clip_as_a_video_of_its_own"]),
    "two-tower-loss-the-towers-mean": (
        "sora_jax/objectives/__init__.py", "    return jnp.sum(value), {k: jnp.mean(m) for k, m in metrics.items()}",
        "    return jnp.mean(value), {k: jnp.mean(m) for k, m in metrics.items()}",
        ["tests/test_training_configs.py::test_the_second_tower_trains_step_for_step_as_the_same_encoder_alone"]),
    "two-stream-motion-sees-rgb": (
        "sora_jax/models/video_encoder.py",
        "diff = (with_frame_differences if m.frame_input == \"two_tower\" else frame_differences)(x, hidden)",
        "diff = (with_frame_differences if m.frame_input == \"two_tower\" else (lambda x, h: x))(x, hidden)",
        ["tests/test_models_motion.py::test_two_streams_put_the_rgb_encoder_beside_a_second_encoder_that_sees_the_differences_only"]),
    "tubelet-without-time-positions": (
        "sora_jax/models/tubelet.py", "x = x + (pos[None] + when).astype(x.dtype)", "x = x + pos[None].astype(x.dtype)",
        ["tests/test_tubelet.py::test_attention_reaches_across_time_and_time_positions_tell_tubelets_apart"]),
    "tubelet-pixels-out-of-order": (
        "sora_jax/models/tubelet.py", "-> b nt (gh gw) (f p q c)", "-> b nt (gh gw) (p q f c)",
        ["tests/test_tubelet.py::test_no_blocks_is_each_tubelets_mean_of_its_normalised_embeddings"]),
    "tubelet-reversal-reverses-its-features": (
        "sora_jax/models/video_encoder.py", 'if m.frame_input == "rgb" and m.frame_encoder != "tubelet":',
        'if m.frame_input == "rgb":', ["tests/test_tubelet.py::test_the_backwards_clip_is_encoded_again"]),
    "tubelet-lets-objectives-read-seen-frames": (
        "sora_jax/config/validate.py", "  if reads or m.predict_steps or m.latent_predict:", "  if False:",
        ["tests/test_tubelet.py::test_config_rules"]),
}
