"""What survives what (README): a second writer on a workdir, a lock or save left by a killed run.
Real processes through the command line; tiny model and clips on the built-in moving_shapes/small."""

import json
import os
import pathlib
import signal
import socket
import subprocess
import sys
import time

ROOT = pathlib.Path(__file__).resolve().parents[1]
TINY = ["--config.data.name=moving_shapes/small", "--config.data.num_frames=4", "--config.data.frame_size=16",
        "--config.data.num_parallel_calls=2", "--config.model.width=0.125", "--config.model.hidden_size=16",
        "--config.model.head_hidden=16", "--config.model.embed_dim=8", "--config.train.batch_size=16",
        "--config.train.log_every=1", "--config.train.checkpoint_every=2", "--config.optimizer.warmup_steps=1",
        "--no_quick_eval"]


def _train(workdir, data_dir, steps, **popen):
  cmd = [sys.executable, str(ROOT / "train.py"), "--config", "default", "--workdir", str(workdir),
         f"--config.data.data_dir={data_dir}", f"--config.train.num_steps={steps}", *TINY]
  env = {**os.environ, "JAX_PLATFORMS": "cpu", "XLA_FLAGS": "--xla_force_host_platform_device_count=2"}
  return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env, **popen)


def test_a_second_train_on_a_busy_workdir_stops_in_one_line_naming_the_holder(data_dir, tmp_path):
  workdir = tmp_path / "run"
  first = _train(workdir, data_dir, 100_000)
  try:
    deadline = time.time() + 240
    while not ((workdir / "metrics.jsonl").exists() and (workdir / "metrics.jsonl").read_text().strip()):
      assert time.time() < deadline and first.poll() is None, "the first run did not start"
      time.sleep(0.5)
    second = _train(workdir, data_dir, 4)
    out = second.communicate(timeout=240)[0]
    assert second.returncode != 0
    error = [line for line in out.splitlines() if "in use" in line]
    assert len(error) == 1 and f"in use by pid {first.pid} on host {socket.gethostname()}" in error[0], out[-2000:]
    assert "Traceback" not in out
    lines_before = len((workdir / "metrics.jsonl").read_text().splitlines())
    first.send_signal(signal.SIGTERM)
    assert first.wait(timeout=120) == 0
  finally:
    first.kill()
  steps = [json.loads(line)["step"] for line in (workdir / "metrics.jsonl").read_text().splitlines()]
  assert steps == sorted(set(steps)) and len(steps) >= lines_before  # one run's lines, in order
  assert not (workdir / "train.lock").exists()  # released on exit


def test_a_lock_and_a_half_written_save_left_by_a_killed_run_are_cleaned_up(data_dir, tmp_path):
  workdir = tmp_path / "run"
  (workdir / "checkpoints" / "7.orbax-checkpoint-tmp-1700000000").mkdir(parents=True)
  dead = subprocess.Popen([sys.executable, "-c", "pass"])
  dead.wait()  # a pid that is not running
  (workdir / "train.lock").write_text(json.dumps({"pid": dead.pid, "host": socket.gethostname(), "since": "then"}))
  proc = _train(workdir, data_dir, 2)
  out = proc.communicate(timeout=240)[0]
  assert proc.returncode == 0, out[-3000:]
  assert f"its run (pid {dead.pid}) is gone" in out and "a save that never finished" in out
  assert sorted(os.listdir(workdir / "checkpoints")) == ["2"] and not (workdir / "train.lock").exists()
