"""What survives what (README): a second writer on a workdir, a lock or save left by a killed run.
Real processes through the command line; tiny model and clips on the built-in moving_shapes/small."""

import json
import os
import pathlib
import re
import signal
import socket
import subprocess
import sys
import threading
import time

import pytest
from test_training import tiny_config

from sora_jax.errors import Stopped
from sora_jax.evaluation import baselines
from sora_jax.training import checkpoint as ckpt

ROOT = pathlib.Path(__file__).resolve().parents[1]
TINY = ["--config.data.name=moving_shapes/small", "--config.data.num_frames=4", "--config.data.frame_size=16",
        "--config.data.num_parallel_calls=2", "--config.model.width=0.125", "--config.model.hidden_size=16",
        "--config.model.head_hidden=16", "--config.model.embed_dim=8", "--config.train.batch_size=16",
        "--config.train.log_every=1", "--config.train.checkpoint_every=2", "--config.optimizer.warmup_steps=1",
        "--no_quick_eval"]


def _train(workdir, data_dir, steps, **popen):
  cmd = [sys.executable, str(ROOT / "train.py"), "--config", "infonce", "--workdir", str(workdir),
         f"--config.data.data_dir={data_dir}", f"--config.train.num_steps={steps}", *TINY]
  env = {**os.environ, "JAX_PLATFORMS": "cpu",
         "XLA_FLAGS": "--xla_force_host_platform_device_count=2 " + os.environ["SORA_TEST_XLA_CODEGEN"]}
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
    assert first.wait(timeout=120) == 75  # saved but not done (EX_TEMPFAIL): `make train` does not go on to eval
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


def _lines(out: str) -> list[str]:
  return out.replace("\r", "\n").splitlines()  # progress bars redraw with \r


def _one_error(proc, what: str) -> str:
  out = proc.communicate(timeout=240)[0]
  errors = [line for line in _lines(out) if "sora-jax: error:" in line]
  assert proc.returncode == 1 and len(errors) == 1 and what in errors[0], out[-3000:]
  assert "Traceback" not in out, out[-3000:]
  return errors[0]


@pytest.mark.slow
def test_a_full_then_read_only_disk_stops_in_one_line_and_the_named_checkpoint_resumes(data_dir, tmp_path):
  disk = tmp_path / "disk"
  disk.mkdir()
  mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=8m", "tmpfs", str(disk)], capture_output=True)
  mounted = mounted.returncode == 0  # root with mount rights: a real small file system
  try:
    workdir = disk / "run"
    # A full disk in the middle of training: the error can land in a checkpoint write (orbax's threads),
    # the metrics or the TensorBoard events, depending on timing; each must end the run in one line.
    run = _train(workdir, data_dir, 100_000)
    deadline = time.time() + 240
    while not (workdir / "checkpoints" / "6").exists():
      assert time.time() < deadline and run.poll() is None, "the run did not reach step 6"
      time.sleep(0.1)
    if mounted:
      # Unbuffered: a buffered file keeps the bytes of the write that failed and raises ENOSPC
      # again when it is closed, in this test (what failed here once under the parallel suite).
      with open(disk / "filler", "wb", buffering=0) as f:
        try:
          while True:
            f.write(b"\0" * 65536)
        except OSError:
          pass
    else:  # no mount rights: every write past one byte fails with EFBIG, as a full disk would
      import resource
      resource.prlimit(run.pid, resource.RLIMIT_FSIZE, (1, 1))
    line = _one_error(run, "cannot write")
    assert ("no space left on the device" if mounted else "file too large") in line, line
    kept = int(re.search(r"checkpoint (\d+) is intact: rerun the same command", line).group(1))
    assert kept >= 6
    if mounted:  # a read-only workdir: train, eval and embed each stop in one line before any work
      (disk / "filler").unlink()
      subprocess.run(["mount", "-o", "remount,ro", str(disk)], check=True)
      _one_error(_train(workdir, data_dir, kept + 2), "train.lock: read-only file system")
      env = {**os.environ, "JAX_PLATFORMS": "cpu"}
      for cmd, target in ((["eval", "--workdir", str(workdir)], "run/baselines"),  # its first write
                          (["embed", "--workdir", str(workdir), "--videos", "dataset:moving_shapes/small:test",
                            "--out", str(disk / "index")], "index")):
        proc = subprocess.Popen([sys.executable, "-c", "import sys; from sora_jax.cli import main; sys.exit(main())",
                                 *cmd], stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True, env=env)
        _one_error(proc, f"{disk / target}: read-only file system")
      subprocess.run(["mount", "-o", "remount,rw", str(disk)], check=True)
    else:
      (disk / "filler").unlink(missing_ok=True)
    # Space again: the same command resumes from the checkpoint the error named.
    again = _train(workdir, data_dir, kept + 2)
    out = again.communicate(timeout=240)[0]
    assert again.returncode == 0 and f"at step {kept} " in out, out[-3000:]
  finally:
    if mounted:
      subprocess.run(["umount", "-l", str(disk)], check=False)


def test_write_failures_are_found_behind_wrappers_and_told_in_one_line():
  from sora_jax.errors import unwritable, unwritable_message
  # orbax re-raises tensorstore's ValueError from its threads, wrapped in its own errors
  ts = ValueError("RESOURCE_EXHAUSTED: Error writing local file \"/w/checkpoints/8.orbax-checkpoint-tmp/x\": "
                  "Failed to write 15337 bytes to file 7: No space left on device [os_error_code='28']")
  try:
    try:
      raise ts
    except ValueError as inner:
      raise RuntimeError("Save Finalize thread failed") from inner
  except RuntimeError as outer:
    found = unwritable(outer)
  assert found.errno == 28 and found.filename == "/w/checkpoints/8.orbax-checkpoint-tmp/x"
  assert unwritable_message(found, kept="checkpoint 6 is intact") == (
      "cannot write /w/checkpoints/8.orbax-checkpoint-tmp/x: no space left on the device; free some space or write "
      "elsewhere (another --workdir/--out); checkpoint 6 is intact")
  assert unwritable(ExceptionGroup("g", [KeyError("k"), OSError(30, "Read-only file system")])).errno == 30
  assert unwritable(ValueError("shape mismatch")) is None and unwritable(OSError(2, "No such file")) is None
  denied = unwritable_message(PermissionError(13, "Permission denied", "/src/videos"))
  assert denied.startswith("/src/videos: permission denied; fix its permissions") and "cannot write" not in denied


def test_a_baseline_stopped_by_sigterm_stops_its_command_and_the_rerun_resumes_it(data_dir, tmp_path):
  """eval trains its baselines with the loop, which saves and returns at a SIGTERM: the eval must stop
  there too (it once scored the half-trained baseline), and the same call must go on from the save."""
  cfg = tiny_config(data_dir, train__num_steps=8, train__checkpoint_every=4)

  def signal_once_the_loop_listens():  # the loop's handler, never the default one (it would end pytest)
    deadline = time.time() + 240
    while time.time() < deadline:
      if type(getattr(signal.getsignal(signal.SIGTERM), "__self__", None)).__name__ == "_Preemption":
        os.kill(os.getpid(), signal.SIGTERM)
        return
      time.sleep(0.005)

  sender = threading.Thread(target=signal_once_the_loop_listens)
  sender.start()
  with pytest.raises(Stopped, match=r"the supervised baseline stopped at step \d+ of 8; .* rerun the same command"):
    baselines.trained("supervised", cfg, tmp_path)
  sender.join()
  out = tmp_path / "baselines" / "supervised"
  assert ckpt.make_manager(out, async_save=False).latest_step() < 8
  assert baselines.trained("supervised", cfg, tmp_path) == out
  assert ckpt.make_manager(out, async_save=False).latest_step() == 8
