"""bench/trace_summary.py: kernels sorted into kinds by name, overlapping kernels counted once for the
busy time, and a real trace written by jax.profiler read back with its events counted per step."""

import pathlib
import sys

import pytest

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1] / "bench"))
import trace_summary  # noqa: E402


@pytest.mark.parametrize("name,kind", [
    # names in the forms cuBLAS, cuDNN, CUTLASS and XLA:GPU give their kernels (written here, not read from a trace)
    ("cudnn_generated_fort_native_sdpa_sm90_knob_7_64x128x64_4x1x1_kernel0_0", "attention"),
    ("sm90_xmma_fprop_implicit_gemm_bf16bf16_bf16f32_f32_nhwckrsc_nhwc_tilesize128x128x64", "convolution"),
    ("sm80_xmma_wgrad_implicit_gemm_indexed_bf16bf16_bf16f32_f32_nhwckrsc_nhwc", "convolution"),
    ("sm90_xmma_gemm_bf16bf16_bf16f32_f32_tn_n_tilesize128x256x64_warpgroupsize2x1x1_cublas", "matmul"),
    ("nvjet_hsh_128x256_64x4_2x1_v_bz_coopA_TNN", "matmul"),
    ("cutlass_80_tensorop_bf16_s16816gemm_relu_bf16_64x64_32x6_tn_align8", "matmul"),
    ("gemm_fusion_dot_12", "matmul"),
    ("input_reduce_fusion_3", "reduction"),
    ("loop_transpose_fusion", "copy"),
    ("Memcpy DtoD", "copy"),
    ("loop_multiply_fusion_7", "elementwise"),
    ("loop_convert_fusion_2", "elementwise"),  # a dtype conversion, not a convolution
    ("ynn_fusion.3", "ynnpack (CPU)"),
    ("some_new_kernel", "other"),
])
def test_kernel_kinds(name, kind):
  assert trace_summary.kind_of(name) == kind


def test_overlapping_kernels_count_once_in_the_busy_time():
  events = [("a", 0, 10), ("b", 5, 20), ("c", 30, 40), ("d", 32, 35)]  # two streams overlapping, a gap of 10
  assert trace_summary.busy_ns(events) == 30
  s = trace_summary.summarise("/device:GPU:0", events, steps=2, top=2)
  assert s["span_ms_per_step"] == pytest.approx(20e-6) and s["kernel_ms_per_step"] == pytest.approx(19e-6)  # 38 ns of kernels over 2 steps
  assert s["busy_fraction"] == pytest.approx(0.75)
  assert [t["kernel"] for t in s["top"]] == ["b", "a"]  # longest first, --top of them
  assert sum(k["share"] for k in s["kinds"].values()) == pytest.approx(1.0)


def test_an_event_holding_others_on_its_line_is_not_counted_again():
  # XLA:CPU: a while loop's event holds its body's thunks; a parent and its first child may start together
  line = [("while", 0, 100), ("body_a", 0, 40), ("body_b", 50, 90), ("after", 100, 120)]
  assert trace_summary.leaves(line) == [("body_a", 0, 40), ("body_b", 50, 90), ("after", 100, 120)]


def test_a_real_trace_counts_each_step_s_kernels_and_nothing_else(tmp_path):
  counts = []
  for steps in (1, 3):
    trace_summary.smoke_trace(tmp_path / str(steps), steps)
    where, events = trace_summary.device_events(trace_summary.newest_trace(tmp_path / str(steps)))
    assert where == "/host:CPU" and events
    counts.append(len(events))
  # the same program each step: 3 traced steps hold 3x the kernels of one (the profiler's own and
  # Python's events on the same threads would not scale with the steps)
  assert counts[1] == 3 * counts[0]
  s = trace_summary.main([str(tmp_path / "3"), "--steps", "3"])
  assert s["kernels_per_step"] == counts[0]
  assert 0 < s["kernel_ms_per_step"] and 0 < s["busy_fraction"] <= 1


def test_a_directory_without_a_trace_says_what_to_do(tmp_path):
  with pytest.raises(SystemExit, match="no \\*.xplane.pb under .*bench/accelerator.py --profile"):
    trace_summary.main([str(tmp_path)])
