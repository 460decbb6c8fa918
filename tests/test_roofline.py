"""bench/roofline.py: the layers it records are the step's FLOPs, counted as XLA counts them."""

import json
import math
import pathlib
import sys

import jax
import jax.numpy as jnp
import pytest

from sora_jax.config import load_config

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))
import roofline  # noqa: E402

# shapes are free: nothing is compiled, only traced and lowered
TINY_RESNET = ["model.frame_encoder=resnet", "model.resnet_depth=18", "model.width=1.0", "model.norm=group",
               "model.resnet_stem=imagenet", "data.frame_size=128", "data.num_frames=2", "train.batch_size=2",
               "train.grad_accum_steps=1"]


@pytest.mark.parametrize("n,k,stride", [(7, 3, 1), (8, 3, 2), (9, 7, 2), (5, 1, 2), (1, 3, 1), (6, 7, 2)])
def test_valid_taps_are_the_multiply_adds_xla_counts(n, k, stride):
  x = jax.ShapeDtypeStruct((2, n, n, 3), jnp.float32)
  w = jax.ShapeDtypeStruct((k, k, 3, 4), jnp.float32)
  conv = lambda x, w: jax.lax.conv_general_dilated(x, w, (stride, stride), "SAME",  # noqa: E731
                                                    dimension_numbers=("NHWC", "HWIO", "NHWC"))
  cost = jax.jit(conv).lower(x, w).cost_analysis()
  assert (cost[0] if isinstance(cost, (list, tuple)) else cost)["flops"] == \
      2 * 2 * 3 * 4 * roofline._valid_taps(n, k, stride) ** 2


def test_recorded_layers_are_the_resnet_and_nearly_all_of_xlas_flops():
  config = load_config("infonce", TINY_RESNET)
  layers = roofline.record_layers(config, 2)
  kinds = [layer["kind"] for layer in layers]
  # ResNet-18: stem, 8 blocks x 2 convolutions, 3 projected shortcuts; a norm after each; one stem pool
  assert kinds.count("conv") == 1 + 16 + 3 and kinds.count("group_norm") == 1 + 16 + 3
  assert kinds.count("stem_pool") == 1
  assert sum(layer.get("residual", False) for layer in layers) == 8  # each block's end
  assert [layer["data_input"] for layer in layers if layer["kind"] == "conv"][:2] == [True, False]
  table = roofline.roofline(layers, 989e12, 3.35e12)
  result = roofline.ceilings(table, 989e12, None, 0.4, flops=roofline.xla_flops(config))
  # the rest: GroupNorm's arithmetic, attention, the loss (padded taps are not counted by either)
  assert 0.98 < result["recorded_flops"] / result["model_flops"] <= 1.0


def test_group_norm_moves_its_minimum_passes_and_ceilings_follow_the_times():
  layer = {"kind": "group_norm", "in": (2, 4, 4, 8), "bytes": 2}
  for residual, passes in ((False, 8), (True, 12)):
    moved = sum(b for _, _, b in roofline.kernels_of(dict(layer, residual=residual)))
    assert moved == passes * 2 * 4 * 4 * 8 * 2
  table = {("conv", "s"): {"flops": 10e12, "bytes": 1e9, "seconds": 0.02, "compute_bound_s": 0.02},
           ("group_norm", "s"): {"flops": 1e9, "bytes": 30e9, "seconds": 0.01, "compute_bound_s": 0.0}}
  out = roofline.ceilings(table, 1e15, 40.0, 0.25, flops=10e12)
  assert out["mfu_all_at_roofline"] == pytest.approx(10e12 / 1e15 / 0.03)
  assert out["mfu_with_measured_convs"] == pytest.approx(10e12 / 1e15 / 0.05)
  assert out["measured_conv_share_of_peak"] == pytest.approx(0.25)
  # 25% of 1e15 for 10 TFLOP is 40 ms; 10 of it is the norm's: the convolutions get 30 ms
  assert out["conv_share_of_peak_needed"] == pytest.approx(10e12 / 1e15 / 0.03)


def test_one_read_group_norm_counts_one_pass_each_way_where_the_group_fits_a_pallas_tile(monkeypatch):
  config = load_config("infonce", TINY_RESNET)  # 128 px: the stem's norm 64x64, 2 channels a group
  monkeypatch.setattr(roofline.group_norm_pallas, "MAX_BLOCK", 2048)  # every group but the stem's fits
  layers = roofline.one_read(roofline.record_layers(config, 2))
  norms = [x for x in layers if x["kind"] == "group_norm"]
  assert [x["one_read"] for x in norms] == [False] + [True] * (len(norms) - 1)
  for layer in norms[:3] + [x for x in norms if x["residual"]][:1]:
    moved = sum(b for _, _, b in roofline.kernels_of(layer))
    passes = (5 + 3 * layer["residual"]) if layer["one_read"] else (8 + 4 * layer["residual"])
    assert moved == passes * math.prod(layer["in"]) * layer["bytes"]


def test_the_script_prints_a_table_and_ends_with_one_json_line(capsys):
  roofline.main(["--config", "infonce", "--per-device-batch", "2", "--conv-ms", "1"] +
                [f"--set={s}" for s in TINY_RESNET if not s.startswith("train.")])
  lines = capsys.readouterr().out.strip().splitlines()
  assert lines[1].split()[:2] == ["layers", "GFLOP"] and any(line.startswith("group_norm stage0") for line in lines)
  result = json.loads(lines[-1])
  assert result["bench"] == "roofline" and result["mfu_with_measured_convs"] < result["mfu_all_at_roofline"]


TINY_VIT = ["model.frame_encoder=vit", "model.vit_size=Ti", "model.vit_depth=2", "model.vit_patch=8",
            "model.temporal=transformer", "model.hidden_size=32", "model.num_heads=2", "data.frame_size=32",
            "data.num_frames=2", "train.batch_size=2", "train.grad_accum_steps=1"]


def test_a_vit_is_recorded_as_dense_layers_attention_and_the_bytes_between_them():
  config = load_config("infonce", TINY_VIT)
  layers = roofline.record_layers(config, 2)
  kinds = [(layer["kind"], layer["stage"]) for layer in layers]
  # 2 ViT blocks and 1 temporal block: attention, GELU and 2 residual adds each; 2 LayerNorms each + a final one
  assert kinds.count(("attention", "frames")) == 2 and kinds.count(("attention", "temporal+heads")) == 1
  assert kinds.count(("layer_norm", "frames")) == 2 * 2 + 1 and kinds.count(("residual", "frames")) == 4
  attention = next(layer for layer in layers if layer["kind"] == "attention")
  assert attention["in"] == (2 * 2 * 2, 16, 192)  # clips x views x frames, (32 / 8)^2 patches, ViT-Ti's width
  table = roofline.roofline(layers, 989e12, 3.35e12)
  result = roofline.ceilings(table, 989e12, None, 0.4, flops=roofline.xla_flops(config))
  # attention's two matmuls forward and four backward are XLA's too (its softmax and the loss are not recorded)
  assert 0.97 < result["recorded_flops"] / result["model_flops"] <= 1.0
  assert result["conv_roofline_ms"] == 0.0 and result["matmul_roofline_ms"] > 0


def test_fused_attention_moves_its_inputs_and_outputs_once_and_recomputes_scores_for_time_only():
  layer = {"kind": "attention", "stage": "frames", "in": (3, 10, 8), "bytes": 2}
  (_, f_fwd, b_fwd), (_, f_bwd, b_bwd), (name, f_re, b_re) = roofline.kernels_of(layer)
  io = 3 * 10 * 8 * 2
  assert (f_fwd, b_fwd, f_bwd, b_bwd) == (4 * 3 * 10 * 10 * 8, 4 * io, 2 * f_fwd, 8 * io)
  assert name == "recompute" and (f_re, b_re) == (f_fwd / 2, 0.0)
  table = roofline.roofline([layer], 1e12, 1e9)
  assert table[("attention", "frames")]["flops"] == f_fwd + f_bwd  # the model's FLOPs
  assert table[("attention", "frames")]["seconds"] == pytest.approx(b_fwd / 1e9 + b_bwd / 1e9 + f_re / 1e12)


def test_mfu_table_puts_each_measured_step_beside_its_ceiling(tmp_path, capsys):
  import mfu_table
  overrides = [s for s in TINY_VIT if not s.startswith("train.")]
  row = {"config": "infonce", "overrides": overrides, "variant": None, "xla_flags": "", "device_kind": "cpu",
         "per_device_batch": 2, "step_s": 0.5, "clips_per_s": 4.0, "tflops_per_s_per_device": 0.1, "mfu": 0.2,
         "model_flops_per_step": 5e10, "compiled_bytes": 1e9, "compile_s": 3.0}
  results = tmp_path / "vit.json"
  results.write_text("a log line\n" + json.dumps({"bench": "accelerator", "configs": {"infonce@2": row}}) + "\n")
  doc = tmp_path / "bench.md"
  doc.write_text("before\n<!-- mfu -->\nold table\n<!-- mfu:end -->\nafter\n")
  mfu_table.main([str(results), "--device", "H200", "--into", str(doc)])
  out = capsys.readouterr().out.strip().splitlines()
  (got,) = json.loads(out[-1])["rows"]
  config = load_config("infonce", overrides + ["train.batch_size=2"])
  table = roofline.roofline(roofline.record_layers(config, 2), 989e12, 4.8e12)  # the H200's (cpu has no roofline)
  top = roofline.ceilings(table, 989e12, None, 0.4, flops=5e10)["mfu_all_at_roofline"]
  assert got["roofline_device"] == "H200" and got["ceiling"] == pytest.approx(top)
  assert got["share_of_ceiling"] == pytest.approx(0.2 / top)
  text = doc.read_text()
  assert "old table" not in text and text.startswith("before\n<!-- mfu -->\n| run |") and text.endswith("after\n")
  assert f"{top:.1%} (H200)" in text
  with pytest.raises(SystemExit, match="no bench/accelerator.py JSON line"):
    mfu_table.main([str(doc)])


def test_normalisation_free_resnet_keeps_the_convolutions_and_drops_the_norms_passes():
  config = load_config("infonce", TINY_RESNET)
  ws = load_config("infonce", TINY_RESNET + ["model.norm=ws"])
  layers, ws_layers = roofline.record_layers(config, 2), roofline.record_layers(ws, 2)
  convs = lambda ls: [(x["in"], x["out"], x["k"]) for x in ls if x["kind"] == "conv"]  # noqa: E731
  assert sorted(convs(ws_layers)) == sorted(convs(layers)) and not any(x["kind"] == "group_norm" for x in ws_layers)
  assert sum(x["kind"] == "stem_pool" for x in ws_layers) == 1
  ceiling = lambda ls: roofline.ceilings(roofline.roofline(ls, 989e12, 3.35e12), 989e12, None, 0.4)  # noqa: E731
  assert ceiling(ws_layers)["mfu_all_at_roofline"] > ceiling(layers)["mfu_all_at_roofline"]


def test_recomputed_layers_cost_their_forward_kernels_again_in_time_not_in_model_flops():
  def layers_and_table(extra):
    layers = roofline.record_layers(load_config("infonce", TINY_VIT + extra), 2)
    return layers, roofline.roofline(layers, 989e12, 3.35e12)

  runs = {name: layers_and_table(extra) for name, extra in {
      "none": [], "block": ["model.remat_frames=block"],
      "dots": ["model.remat_frames=block", "model.remat_policy=dots"],
      "temporal": ["model.remat=True"]}.items()}
  seconds = {k: sum(r["seconds"] for r in t.values()) for k, (_, t) in runs.items()}
  flops = {k: sum(r["flops"] for r in t.values()) for k, (_, t) in runs.items()}
  assert len(set(flops.values())) == 1  # recomputation is time, never the model's FLOPs
  assert seconds["none"] < seconds["temporal"] < seconds["block"] and seconds["none"] < seconds["dots"] < seconds["block"]
  marks = {k: [(x["kind"], x["stage"], x["recompute"]) for x in layers] for k, (layers, _) in runs.items()}
  assert {m for _, _, m in marks["none"]} == {None}
  # remat_frames=block: every layer in the ViT's blocks and no other (the patch embedding, the final
  # LayerNorm and the temporal model run once); dots: their dense layers kept, the GELU a pass of its own
  assert marks["block"].count(("dense", "frames", "forward")) == 2 * 6  # q, k, v, out, mlp_in, mlp_out
  assert ("dense", "frames", None) in marks["block"] and ("layer_norm", "frames", None) in marks["block"]
  assert not any(m for _, stage, m in marks["block"] if stage == "temporal+heads")
  assert not any(m for kind, _, m in marks["dots"] if kind == "dense")
  assert marks["dots"].count(("gelu", "frames", "standalone")) == 2
  assert marks["dots"].count(("attention", "frames", "forward")) == 2
  assert {m for kind, stage, m in marks["temporal"] if stage == "frames"} == {None}
  assert ("attention", "temporal+heads", "forward") in marks["temporal"]
  # remat_frames=time: the whole frame encoder, whatever the policy
  layers, _ = layers_and_table(["model.remat_frames=time"])
  assert {x["recompute"] for x in layers if x["stage"] == "frames"} == {"forward"}
