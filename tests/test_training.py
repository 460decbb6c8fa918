"""Training: determinism, exact resume, 8 -> 2 device restore, NaN stop, kill -9 during a save, bad
configs, FSDP, device prefetch, the profiler window (processes and interruptions:
test_training_processes.py, which shares these helpers and the `straight` run).

Tiny model and clips on the built-in `moving_shapes/small`; runs share a persistent compilation
cache so that the same program is compiled once per session.
"""

import json
import os
import pathlib
import re
import shutil
import signal
import subprocess
import sys
import textwrap
import time

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from sora_jax.config import load_config
from sora_jax.errors import ConfigError
from sora_jax.training import checkpoint as ckpt
from sora_jax.training.loop import DivergedError, train

ROOT = pathlib.Path(__file__).resolve().parents[1]


def tiny_config(data_dir, **overrides):
  c = load_config(ROOT / "configs/infonce.py")
  c.data.name = "moving_shapes/small"
  c.data.data_dir = data_dir
  c.data.num_frames, c.data.frame_size, c.data.num_parallel_calls = 4, 16, 2
  c.model.width, c.model.hidden_size, c.model.head_hidden, c.model.embed_dim = 0.125, 16, 16, 8
  c.train.batch_size, c.train.num_steps, c.train.log_every, c.train.checkpoint_every = 16, 4, 1, 2
  c.train.quick_eval_every = 0
  c.optimizer.warmup_steps = 1
  # Against the EMA teacher too: every resume, restore, FSDP and process-count test below covers
  # `ema_params` (a teacher not restored exactly would change the byol loss after a resume).
  c.objective.name = "infonce+byol"
  for key, value in overrides.items():
    section, name = key.split("__")
    c[section][name] = value
  return c


def _run(config, workdir, **kwargs):
  ids = []
  state = train(config, workdir, batch_callback=lambda step, b: ids.append((step, b["video_id"].tolist())),
                **kwargs)
  return state, ids


TIMING = {"clips_per_sec", "clips_per_sec_per_device", "step_time", "data_wait_share"}  # wall-clock: vary


def _metrics(workdir):
  rows = [json.loads(line) for line in open(pathlib.Path(workdir) / "metrics.jsonl")]
  return [{k: v for k, v in r.items() if k not in TIMING} for r in rows]


def _leaves(state):
  """The parameters' leaves, then the EMA teacher's."""
  return [np.asarray(x) for x in jax.tree_util.tree_leaves(jax.device_get((state.params, state.ema_params)))]


@pytest.fixture(scope="module")
def shared_data_dir(tmp_path_factory):
  return str(tmp_path_factory.getbasetemp() / "sora_data")  # the same folder as conftest's data_dir


@pytest.fixture(scope="module")
def straight(shared_data_dir, tmp_path_factory):
  """4 steps on 8 devices, checkpoints at 2 and 4."""
  data_dir = shared_data_dir
  workdir = tmp_path_factory.mktemp("straight")
  state, ids = _run(tiny_config(data_dir), workdir)
  return workdir, _leaves(state), ids


def test_same_seed_twice_identical_and_learning(straight, data_dir, tmp_path):
  workdir, params, ids = straight
  state, ids2 = _run(tiny_config(data_dir), tmp_path)
  assert ids2 == ids
  assert _metrics(tmp_path) == _metrics(workdir)
  for a, b in zip(params, _leaves(state)):
    np.testing.assert_array_equal(a, b)
  rows = _metrics(workdir)
  assert [r["step"] for r in rows] == [1, 2, 3, 4] and all(np.isfinite(r["loss"]) for r in rows)
  assert (workdir / "config.json").is_file() and sorted(os.listdir(workdir / "checkpoints")) == ["2", "4"]
  assert any(name.startswith("events.out.tfevents") for name in os.listdir(workdir))


def test_stop_and_resume_is_bitwise_identical(straight, data_dir, tmp_path):
  workdir, params, ids = straight
  state1, ids1 = _run(tiny_config(data_dir), tmp_path, stop_at_step=2)
  assert int(state1.step) == 2 and ckpt.make_manager(tmp_path).latest_step() == 2
  state2, ids2 = _run(tiny_config(data_dir), tmp_path)
  assert int(state2.step) == 4
  assert [x for x in ids1 if x[0] < 2] + ids2 == ids  # the input resumed exactly where it stopped
  for a, b in zip(params, _leaves(state2)):
    np.testing.assert_array_equal(a, b)
  assert _metrics(tmp_path) == _metrics(workdir)


def test_resume_after_a_lost_checkpoint_redoes_the_steps_and_logs_each_step_once(straight, data_dir, tmp_path):
  """A run that died after logging step 4 but before its checkpoint landed resumes from step 2:
  steps 3-4 are redone identically and metrics.jsonl holds each step once."""
  workdir, params, _ = straight
  shutil.copytree(workdir, tmp_path / "run")
  shutil.rmtree(tmp_path / "run" / "checkpoints" / "4")
  with open(tmp_path / "run" / "metrics.jsonl", "a") as f:
    f.write('{"step": 5, "loss": 0.1')  # a line cut by the kill
  state, _ = _run(tiny_config(data_dir), tmp_path / "run")
  assert int(state.step) == 4 and _metrics(tmp_path / "run") == _metrics(workdir)
  for a, b in zip(params, _leaves(state)):
    np.testing.assert_array_equal(a, b)


def _seeded(config, seed):
  config.seed = seed
  return config


def test_resume_on_other_data_stops_in_one_line_unless_allowed(straight, data_dir, tmp_path, monkeypatch):
  """A resume whose seed or batch differs from the checkpoint's would silently change the data order:
  it stops before any step, naming each change and the flag; with the flag it continues on the new
  stream from the saved step and says so."""
  workdir, _, ids = straight
  shutil.copytree(workdir / "checkpoints" / "2", tmp_path / "checkpoints" / "2")
  with pytest.raises(ConfigError, match=r"^checkpoint 2 was trained on other data \(seed 0 -> 7; global_batch 16 -> 8\)"
                     r".*--config\.train\.allow_data_change=true$") as e:
    _run(_seeded(tiny_config(data_dir, train__batch_size=8), 7), tmp_path)
  assert "\n" not in str(e.value) and sorted(os.listdir(tmp_path / "checkpoints")) == ["2"]
  messages = []
  import sora_jax.training.loop as loop_lib
  monkeypatch.setattr(loop_lib, "_say", messages.append)
  state, ids2 = _run(_seeded(tiny_config(data_dir, train__allow_data_change=True), 7), tmp_path)
  assert int(state.step) == 4 and [step for step, _ in ids2] == [2, 3]
  assert ids2 != ids[2:]  # the new seed's order, from the saved step on
  assert any(m.startswith("the input changed since checkpoint 2 (seed 0 -> 7)") for m in messages), messages


def test_a_run_whose_lock_was_taken_over_stops_without_saving_or_deleting_it(data_dir, tmp_path, monkeypatch):
  """Another run takes train.lock over (this one's lease having expired, say after a long pause):
  the heartbeat notices, and the loop stops at the next step without saving, logging or releasing."""
  import sora_jax.training.lock as lock_lib
  from sora_jax.training.lock import WorkdirBusy
  monkeypatch.setattr(lock_lib, "HEARTBEAT_S", 0.05)
  successor = json.dumps({"pid": 4242, "host": "another-host", "token": "successor", "expires": 2e9})

  said = []
  import sora_jax.training.loop as loop_lib
  monkeypatch.setattr(loop_lib, "_say", said.append)

  def take_over(step, batch):
    if step == 10:  # read up to data.device_prefetch steps ahead of its step
      (tmp_path / "train.lock").write_text(successor)
      deadline = time.time() + 120
      while not any("is no longer this run's" in m for m in said):  # the heartbeat noticed
        assert time.time() < deadline, said
        time.sleep(0.05)

  with pytest.raises(WorkdirBusy, match=r"^stopped at step (\d+) without saving: .*train\.lock was taken over") as e:
    train(tiny_config(data_dir, train__num_steps=40, train__checkpoint_every=2), tmp_path, batch_callback=take_over)
  stopped = int(re.search(r"step (\d+)", str(e.value)).group(1))
  assert 8 <= stopped < 40 and (tmp_path / "train.lock").read_text() == successor  # not deleted on the way out
  assert all(int(d) < stopped for d in os.listdir(tmp_path / "checkpoints") if d.isdigit())
  assert max(json.loads(line)["step"] for line in open(tmp_path / "metrics.jsonl")) < stopped


def test_without_device_prefetch_the_run_is_the_same(straight, data_dir, tmp_path):
  workdir, params, ids = straight
  state, ids0 = _run(tiny_config(data_dir, data__device_prefetch=0), tmp_path)
  assert ids0 == ids and _metrics(tmp_path) == _metrics(workdir)
  rows = [json.loads(line) for line in open(tmp_path / "metrics.jsonl")]
  for r in rows:  # the throughput a pod user reads: per device, per step, and the input's share
    assert r["clips_per_sec_per_device"] == pytest.approx(r["clips_per_sec"] / 8)
    assert r["step_time"] > 0 and 0 <= r["data_wait_share"] <= 1


def test_fsdp_2_by_data_4_trains_like_data_8_with_sharded_kernels_and_moments(straight, data_dir, tmp_path):
  workdir, params, _ = straight
  state, _ = _run(tiny_config(data_dir, mesh__data=4, mesh__fsdp=2, mesh__fsdp_min_size=0), tmp_path)
  one, two = _metrics(workdir), _metrics(tmp_path)
  np.testing.assert_allclose([r["loss"] for r in two], [r["loss"] for r in one], rtol=1e-5)
  for a, b in zip(params, _leaves(state)):
    np.testing.assert_allclose(b, a, rtol=2e-4, atol=2e-6)
  leaves = jax.tree_util.tree_flatten_with_path(state)[0]
  kernels = [(jax.tree_util.keystr(p), x) for p, x in leaves if jax.tree_util.keystr(p).endswith("['kernel']")]
  assert any("opt_state" in name for name, _ in kernels) and any(".params" in name for name, _ in kernels)
  for name, x in kernels:  # parameters and optimizer moments: each device holds half of every kernel
    assert "fsdp" in x.sharding.spec, (name, x.sharding.spec)
    assert x.addressable_shards[0].data.size * 2 == x.size, name


@pytest.fixture
def nan_marker(monkeypatch):
  """The loss becomes NaN when a batch's first label is -99 (never in real data), injected by a
  batch_callback. Also used by the 2-device test so both tests share one compiled program."""
  from sora_jax import objectives
  real = objectives.compute_loss

  def poisoned(config, outputs, batch, params=None, key=None):
    loss, metrics = real(config, outputs, batch, params, key)
    return loss + jnp.where(batch["label"][0] == -99, jnp.nan, 0.0), metrics

  monkeypatch.setattr(objectives, "compute_loss", poisoned)


def test_checkpoint_from_8_devices_continues_on_2(straight, data_dir, tmp_path, nan_marker):
  workdir, params, ids = straight
  shutil.copytree(workdir / "checkpoints" / "2", tmp_path / "checkpoints" / "2")
  config = tiny_config(data_dir, mesh__data=2)
  state, ids2 = _run(config, tmp_path)
  assert jax.tree_util.tree_leaves(state.params)[0].sharding.mesh.size == 2
  assert ids2 == ids[2:]
  for a, b in zip(params, _leaves(state)):  # same maths, other reduction order
    np.testing.assert_allclose(a, b, rtol=2e-4, atol=2e-6)
  # load_for_inference: one local device, whatever wrote it; the run's config comes back.
  cfg, variables, step = ckpt.load_for_inference(tmp_path)
  assert step == 4 and cfg.mesh.data == 2
  for field in ("crop_scale", "color_jitter"):  # tuples come back as tuples
    assert cfg.data.augment[field] == tuple(config.data.augment[field]) and isinstance(cfg.data.augment[field], tuple)
  np.testing.assert_array_equal(jax.tree_util.tree_leaves(variables["params"])[0], _leaves(state)[0])


@pytest.mark.parametrize("log_every,checkpoint_every,num_steps", [(1, 2, 4), (6, 4, 6)])
def test_nan_loss_stops_with_step_and_keeps_last_good_checkpoint(data_dir, tmp_path, nan_marker, log_every,
                                                                checkpoint_every, num_steps):
  """Metrics stay on the devices between log steps: a NaN at step 3 found at step 4 (a checkpoint
  step that logs nothing) still stops the run before step 4 is saved, and names step 3."""
  def inject(step, batch):
    if step == 2:  # the third step
      batch["label"] = np.full_like(batch["label"], -99)

  config = tiny_config(data_dir, mesh__data=2, train__log_every=log_every, train__checkpoint_every=checkpoint_every,
                       train__num_steps=num_steps)
  last_good = 2 if checkpoint_every == 2 else None
  with pytest.raises(DivergedError, match=rf"at step 3\b.*Last good checkpoint: step {last_good}"):
    train(config, tmp_path, batch_callback=inject)
  if last_good is None:
    assert not (tmp_path / "checkpoints").exists() or not os.listdir(tmp_path / "checkpoints")
    return
  assert sorted(os.listdir(tmp_path / "checkpoints")) == ["2"]
  _, variables, step = ckpt.load_for_inference(tmp_path)
  assert step == 2 and all(np.isfinite(x).all() for x in jax.tree_util.tree_leaves(variables))


_KILL_DURING_SAVE = textwrap.dedent("""
    import os, signal, sys
    import jax, jax.numpy as jnp, optax
    from sora_jax.config import load_config
    from sora_jax.training import checkpoint as ckpt
    from sora_jax.training.state import TrainState
    def state(v):
      params = {"encoder": {"w": jnp.full((4096, 8192), v, jnp.float32)}, "objective": {}}
      return TrainState(step=jnp.array(int(v)), params=params, model_state={},
                        opt_state=optax.sgd(0.1).init(params), rng=jax.random.PRNGKey(0))
    config = load_config(sys.argv[2])
    manager = ckpt.make_manager(sys.argv[1])
    ckpt.save(manager, 1, state(1.0), {"pos": 1}, config)
    manager.wait_until_finished()
    ckpt.save(manager, 2, state(2.0), {"pos": 2}, config)  # returns once the arrays are off the device
    os.kill(os.getpid(), signal.SIGKILL)  # the files of step 2 are being written
""")


def test_kill_during_save_leaves_previous_checkpoint_restorable(tmp_path):
  script = tmp_path / "kill.py"
  script.write_text(_KILL_DURING_SAVE)
  proc = subprocess.run([sys.executable, str(script), str(tmp_path / "run"), str(ROOT / "configs/infonce.py")],
                        capture_output=True, text=True, env={**os.environ, "JAX_PLATFORMS": "cpu"}, timeout=120)
  assert proc.returncode == -signal.SIGKILL, proc.stderr[-2000:]
  manager = ckpt.make_manager(tmp_path / "run")
  assert manager.latest_step() == 1  # the half-written step 2 is not a checkpoint
  abstract = jax.eval_shape(lambda: _abstract_kill_state())
  state, data_state, step = ckpt.restore(manager, abstract)
  assert step == 1 and data_state == {"pos": 1}
  assert float(state.params["encoder"]["w"].min()) == float(state.params["encoder"]["w"].max()) == 1.0


def _abstract_kill_state():
  import optax

  from sora_jax.training.state import TrainState
  params = {"encoder": {"w": jnp.zeros((4096, 8192), jnp.float32)}, "objective": {}}
  return TrainState(step=jnp.array(0), params=params, model_state={}, opt_state=optax.sgd(0.1).init(params),
                    rng=jax.random.PRNGKey(0))


@pytest.mark.parametrize("override, message", [
    ("train.batch_size=12", "train.batch_size=12 is not divisible by the data axis"),
    ("objective.name=simclr", "'simclr' is not a term"),
    ("data.num_views=1", "needs >= 2 views"),
])
def test_bad_config_one_line_error_before_compile(override, message, tmp_path, capsys):
  from sora_jax import cli
  code = cli.main(["train", "--config", str(ROOT / "configs/infonce.py"), "--workdir", str(tmp_path),
                   "--config.mesh.data=8", f"--config.{override}"])
  err = capsys.readouterr().err.strip()
  assert code == 1 and message in err and len(err.splitlines()) == 1
  assert not (tmp_path / "checkpoints").exists()


def test_batch_not_divisible_by_all_devices_fails_in_make_mesh(data_dir, tmp_path):
  with pytest.raises(ConfigError, match="batch_size=12 is not divisible by the data axis"):
    train(tiny_config(data_dir, train__batch_size=12), tmp_path)  # mesh.data=-1: 8 devices
  assert not (tmp_path / "checkpoints").exists()


def test_steps_on_one_batch_lower_the_loss_and_move_every_parameter():
  """The step learns: 8 steps on one fixed batch (2 views of 8 random clips) lower the InfoNCE loss
  well below its first value and change every parameter leaf (a step that dropped the update, or
  froze a part of the model, would not)."""
  from sora_jax.parallel import mesh as mesh_lib
  from sora_jax.training.step import build_step
  config = load_config("infonce", ["data.num_frames=4", "data.frame_size=16", "model.width=0.125",
                                   "model.hidden_size=16", "model.head_hidden=16", "model.embed_dim=8",
                                   "train.batch_size=8", "mesh.data=2", "optimizer.warmup_steps=0",
                                   "optimizer.schedule=constant", "optimizer.weight_decay=0"])
  built = build_step(config, mesh_lib.make_mesh(config, devices=jax.devices()[:2]))
  step, state = built.step, built.init()
  before = _leaves(state)
  rng = np.random.default_rng(0)
  clips = rng.integers(0, 255, (8, 1, 4, 16, 16, 3), np.uint8)
  batch = {"video": np.concatenate([clips, np.clip(clips.astype(int) + 8, 0, 255).astype(np.uint8)], axis=1),
           "label": np.zeros(8, np.int32)}
  losses = []
  for _ in range(8):
    state, metrics = step(state, batch)
    losses.append(float(metrics["loss"]))
  assert losses[-1] < 0.5 * losses[0], losses
  moved = [not np.array_equal(a, b) for a, b in zip(before, _leaves(state))]
  assert all(moved), f"{moved.count(False)} of {len(moved)} parameter leaves never changed"


def test_profile_steps_writes_a_trace_of_exactly_those_steps(data_dir, tmp_path):
  import glob

  from tensorflow.tsl.profiler.protobuf import xplane_pb2
  train(tiny_config(data_dir, train__num_steps=4, train__profile_steps="1:3"), tmp_path)
  traces = glob.glob(str(tmp_path / "plugins" / "profile" / "*" / "*.xplane.pb"))
  assert len(traces) == 1  # where `tensorboard --logdir WORKDIR` looks
  space = xplane_pb2.XSpace()
  space.ParseFromString(pathlib.Path(traces[0]).read_bytes())
  calls = 0
  for plane in space.planes:
    # one launch of the step's executable per step (per-device events carry a '[i] ' prefix)
    ids = {i for i, m in plane.event_metadata.items() if m.name.endswith("Execute (jit_train_step)")
           and not m.name.startswith("[")}
    calls += sum(e.metadata_id in ids for line in plane.lines for e in line.events)
  assert calls == 2  # steps 1 and 2: not step 0, not step 3
  # no Python tracer (its events are named '$file.py:line function'): its hooks on every thread
  python_calls = [m.name for plane in space.planes for m in plane.event_metadata.values() if m.name.startswith("$")]
  assert not python_calls, python_calls[:3]
