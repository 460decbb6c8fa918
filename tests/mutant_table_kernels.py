"""Mutations of the kernels chosen per platform (models/kernels.py: the CPU's pool gradients, fused and
Pallas GroupNorms, depthwise taps, XLA:CPU options) and of the roofline that counts them, in the form
of mutant_table.MUTANTS, which includes them."""

_TESTS = "tests/test_group_norm_pallas.py::"
KERNEL_MUTANTS = {
    "cpu-max-pool-gradient-ignores-ties": (
        "sora_jax/models/kernels.py", "share = dy / mask.sum(axis=(2, 4)).astype(dy.dtype)", "share = dy",
        ["tests/test_kernels.py"]),
    "fused-group-norm-drops-mean-gradient": (
        "sora_jax/models/group_norm.py", "        - _per_channel(rstd * mean_dxhat, x, groups))", "        )",
        ["tests/test_group_norm.py"]),
    "fused-group-norm-relu-passes-at-zero": (
        "sora_jax/models/group_norm.py", "residual, False) > 0, g, 0.0)", "residual, False) >= 0, g, 0.0)",
        ["tests/test_group_norm.py"]),
    "fused-group-norm-on-every-platform": (
        "sora_jax/models/kernels.py", "return lax.platform_dependent(*args, cpu=cpu, default=default)",
        "return lax.platform_dependent(*args, cpu=cpu, default=cpu)", ["tests/test_group_norm.py"]),
    "stem-pool-every-maximum-takes-gradient": (
        "sora_jax/models/kernels.py", "hit = (tap == y) & ~taken", "hit = tap == y", ["tests/test_kernels.py"]),
    "roofline-counts-padded-taps": (
        "bench/roofline.py", "low = max((m - 1) * stride + k - n, 0) // 2",
        "low = 0", ["tests/test_roofline.py"]),
    "roofline-norm-gradient-skips-the-residual": (
        "bench/roofline.py", '("gradient", 6.0 * n, (3 + 2 * r) * n * b)', '("gradient", 6.0 * n, 3 * n * b)',
        ["tests/test_roofline.py"]),
    "cpu-options-keep-ynn-convolutions": (
        "sora_jax/models/kernels.py", '_YNN_WITHOUT_CONVOLUTIONS = "LIBRARY_FUSION_TYPE_INDIVIDUAL_DOT,LIBRARY_FUSION_TYPE_REDUCE"',
        '_YNN_WITHOUT_CONVOLUTIONS = "LIBRARY_FUSION_TYPE_INDIVIDUAL_DOT,LIBRARY_FUSION_TYPE_REDUCE,'
        'LIBRARY_FUSION_TYPE_INDIVIDUAL_CONVOLUTION"',
        ["tests/test_kernels.py::test_cpu_options_keep_xla_cpu_defaults_but_convolutions_and_the_train_step_uses_them"]),
    "depthwise-taps-pad-before": (
        "sora_jax/models/kernels.py", "  return total // 2, total - total // 2\n\n\ndef _depthwise_xla",
        "  return total - total // 2, total // 2\n\n\ndef _depthwise_xla",
        ["tests/test_efficientnet.py::test_depthwise_taps_equal_xlas_grouped_convolution_values_and_gradients"]),
    "roofline-ignores-remat-policy": (
        "bench/roofline.py", '  if policy == "dots" and kind in ("dense", "gelu"):', "  if False:",
        ["tests/test_roofline.py::test_recomputed_layers_cost_their_forward_kernels_again_in_time_not_in_model_flops"]),
    "roofline-attention-recompute-counted-as-model-flops": (
        "bench/roofline.py", 'row["flops"] += 0.0 if name == "recompute" or name.startswith("remat ") else flops',
        'row["flops"] += 0.0 if name.startswith("remat ") else flops',
        ["tests/test_roofline.py"]),
    "pallas-gn-forgets-the-mean": (
        "sora_jax/models/group_norm_pallas.py", "    y = (x - mean) * (rstd * scale) + bias",
        "    y = x * (rstd * scale) + bias", [_TESTS + "test_pallas_values_and_gradients_equal_the_fused_form"]),
    "pallas-gn-gradient-without-its-mean-term": (
        "sora_jax/models/group_norm_pallas.py", " - rstd * mean_dxhat)", ")",
        [_TESTS + "test_pallas_values_and_gradients_equal_the_fused_form"]),
    "pallas-gn-relu-mask-without-the-residual": (
        "sora_jax/models/group_norm_pallas.py", "        pre = pre + tile.load(res_ref)", "        pre = pre",
        [_TESTS + "test_pallas_values_and_gradients_equal_the_fused_form"]),
    "pallas-gn-row-blocks-forget-the-first": (
        "sora_jax/models/group_norm_pallas.py",
        "    return lax.fori_loop(0, self.count, lambda i, carry: body(self.tile(i), carry), init)",
        "    return lax.fori_loop(1, self.count, lambda i, carry: body(self.tile(i), carry), init)",
        [_TESTS + "test_groups_read_in_row_blocks_give_the_same_values_and_gradients"]),
    "pallas-gn-not-lowered-for-cuda": (
        "sora_jax/models/kernels.py", "cuda=lambda *a: _gn_pallas.pallas(*a, groups, relu, False, per_program),",
        "cuda=fused,",
        [_TESTS + "test_forced_pallas_lowers_two_triton_kernels_for_cuda_and_none_by_default_or_elsewhere"]),
    "roofline-one-read-gradient-reads-twice": (
        "bench/roofline.py", '("gradient", 10.0 * n, (3 + 2 * r) * n * b)', '("gradient", 10.0 * n, (5 + 3 * r) * n * b)',
        ["tests/test_roofline.py::test_one_read_group_norm_counts_one_pass_each_way_where_the_group_fits_a_pallas_tile"]),
    "pallas-gn-wide-programs-mix-their-groups": (
        "sora_jax/models/group_norm_pallas.py", "(c[:, None] // group == c[None, :] // group)", "(c[:, None] >= 0)",
        [_TESTS + "test_pallas_values_and_gradients_equal_the_fused_form"]),
}
