"""train.lock as a lease (sora_jax/training/lock.py): which locks are stale, the heartbeat, and a
release that never deletes a successor's lock. Real files; the same rules hold on gs:// (the
storage calls under them are tested against the emulator in test_cloud.py)."""

import json
import os
import socket
import time

import pytest

from sora_jax.training.lock import WorkdirBusy, WorkdirLock


def _write(path, **record):
  path.write_text(json.dumps({"since": "then", "token": "someone-else", **record}))


def test_an_expired_lease_is_taken_over_whatever_its_host(tmp_path):
  _write(tmp_path / "train.lock", pid=1, host="a-preempted-vm", expires=time.time() - 30)
  said = []
  with WorkdirLock(tmp_path, said.append):
    held = json.loads((tmp_path / "train.lock").read_text())
    assert held["pid"] == os.getpid() and held["expires"] > time.time()
  assert said and said[0].startswith(f"taking over {tmp_path / 'train.lock'}: its lease expired 3")
  assert not (tmp_path / "train.lock").exists()


def test_a_live_lease_on_another_host_is_refused_in_one_line(tmp_path):
  _write(tmp_path / "train.lock", pid=4242, host="another-host", expires=time.time() + 300)
  with pytest.raises(WorkdirBusy, match=r"^workdir .* is in use by pid 4242 on host another-host .*wait for its "
                                        r"lease to expire\)$"):
    WorkdirLock(tmp_path, print).__enter__()
  assert json.loads((tmp_path / "train.lock").read_text())["host"] == "another-host"  # untouched


def test_a_lock_naming_this_very_process_from_an_earlier_start_is_taken_over(tmp_path):
  """A container restarted under the same hostname runs as the same pid (1): its old lock names a
  live pid, this one, and must not refuse it forever."""
  _write(tmp_path / "train.lock", pid=os.getpid(), host=socket.gethostname(), expires=time.time() + 300)
  said = []
  with WorkdirLock(tmp_path, said.append):
    pass
  assert said == [f"taking over {tmp_path / 'train.lock'}: it names this process (pid {os.getpid()}) from an "
                  "earlier start"]


def test_the_heartbeat_moves_the_expiry_and_a_lost_lock_is_left_to_its_new_holder(tmp_path):
  said = []
  lock = WorkdirLock(tmp_path, said.append, lease_s=2.0, heartbeat_s=0.05)
  with lock:
    first = json.loads((tmp_path / "train.lock").read_text())["expires"]
    time.sleep(0.4)
    assert json.loads((tmp_path / "train.lock").read_text())["expires"] > first  # refreshed
    _write(tmp_path / "train.lock", pid=4242, host="another-host", expires=time.time() + 300)  # taken over
    time.sleep(0.4)
    assert json.loads((tmp_path / "train.lock").read_text())["host"] == "another-host"  # not rewritten
  assert said == [f"{tmp_path / 'train.lock'} is no longer this run's (taken over after its lease expired); "
                  "another run may be writing this workdir"]
  assert json.loads((tmp_path / "train.lock").read_text())["host"] == "another-host"  # not deleted on exit
