"""Mutations of the Pallas GroupNorm kernels and of the roofline that counts them, in the form of
mutant_table.MUTANTS, which includes them."""

_TESTS = "tests/test_group_norm_pallas.py::"
KERNEL_MUTANTS = {
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
