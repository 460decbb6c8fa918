"""Every path on gs://, against a real GCS JSON API served on 127.0.0.1 (gcp-storage-emulator):
prepare -> train -> kill -> resume -> eval -> embed -> search, through the command line. Nothing
may land in a local folder named `gs:`. Also: schemes without a filesystem fail in one line."""

import json
import os
import pathlib
import signal
import socket
import subprocess
import sys
import time
import urllib.parse
import urllib.request

import av
import numpy as np
import pytest

from sora_jax import storage
from sora_jax.errors import SoraError

ROOT = pathlib.Path(__file__).resolve().parents[1]
BUCKET = "sora-test"
CLI = [sys.executable, "-c", "import sys; from sora_jax.cli import main; sys.exit(main(sys.argv[1:]))"]
TINY = ["--config.data.num_frames=4", "--config.data.frame_size=16", "--config.data.num_parallel_calls=2",
        "--config.model.width=0.125", "--config.model.hidden_size=16", "--config.model.head_hidden=16",
        "--config.model.embed_dim=8", "--config.train.batch_size=4", "--config.train.log_every=1",
        "--config.train.checkpoint_every=2", "--config.optimizer.warmup_steps=1", "--no-quick-eval"]


def _start_emulator(*flags: str):
  """-> (process, URL) of tests/gcs_emulator.py with one bucket, once it answers."""
  pytest.importorskip("gcsfs")
  pytest.importorskip("gcp_storage_emulator")
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
  url = f"http://127.0.0.1:{port}"
  proc = subprocess.Popen([sys.executable, str(ROOT / "tests" / "gcs_emulator.py"), "--port", str(port), "--bucket", BUCKET,
                           *flags], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
  deadline = time.time() + 60
  while True:
    try:
      urllib.request.urlopen(f"{url}/storage/v1/b/{BUCKET}/o", timeout=2).read()
      return proc, url
    except OSError:
      assert time.time() < deadline and proc.poll() is None, "the GCS emulator did not start"
      time.sleep(0.2)


@pytest.fixture(scope="module")
def gcs(tmp_path_factory):
  """(env for subprocesses, emulator URL): a GCS emulator with one bucket, for this module."""
  proc, url = _start_emulator()
  env = {**os.environ, "STORAGE_EMULATOR_HOST": url, "TENSORSTORE_GCS_HTTP_URL": url,
         "GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT": "false", "JAX_PLATFORMS": "cpu",
         "XLA_FLAGS": "--xla_force_host_platform_device_count=2 " + os.environ["SORA_TEST_XLA_CODEGEN"],
         "TF_CPP_MIN_LOG_LEVEL": "2"}
  yield env, url
  proc.terminate()
  proc.wait(timeout=30)


def _objects(url: str, prefix: str) -> dict:
  """name -> size of the bucket's objects under `prefix`, straight from the JSON API."""
  out, token = {}, None
  while True:
    query = {"prefix": prefix, **({"pageToken": token} if token else {})}
    page = json.loads(urllib.request.urlopen(f"{url}/storage/v1/b/{BUCKET}/o?{urllib.parse.urlencode(query)}").read())
    out.update({o["name"]: int(o["size"]) for o in page.get("items", [])})
    token = page.get("nextPageToken")
    if not token:
      return out


def _read(url: str, name: str) -> bytes:
  return urllib.request.urlopen(f"{url}/download/storage/v1/b/{BUCKET}/o/{urllib.parse.quote(name, safe='')}"
                                "?alt=media").read()


def _videos(root: pathlib.Path, per_class: int = 6) -> pathlib.Path:
  """Small real MPEG-4 files in two classes (a square moving right / down)."""
  for cls, (dx, dy) in {"right": (1, 0), "down": (0, 1)}.items():
    (root / cls).mkdir(parents=True)
    for k in range(per_class):
      with av.open(str(root / cls / f"{cls}{k}.mp4"), "w") as container:
        stream = container.add_stream("mpeg4", rate=8)
        stream.width = stream.height = 32
        stream.pix_fmt = "yuv420p"
        for t in range(12):
          frame = np.full((32, 32, 3), 30 * k % 200, np.uint8)
          x, y = 4 + dx * t + k % 3, 4 + dy * t + k % 3
          frame[y:y + 8, x:x + 8] = 255
          container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        container.mux(stream.encode())
  return root


def _run(args, env, cwd, timeout=400):
  proc = subprocess.run(args, env=env, cwd=cwd, capture_output=True, text=True, timeout=timeout)
  assert proc.returncode == 0, (proc.stdout + proc.stderr)[-3000:]
  return proc.stdout + proc.stderr


def _committed_steps(url: str) -> list[int]:
  """Checkpoint steps orbax finished in gs://BUCKET/run: the step's own commit marker (its items'
  markers come first, and a step killed between them is not a checkpoint)."""
  parts = [n.split("/") for n in _objects(url, "run/checkpoints/")]
  return sorted(int(p[2]) for p in parts if len(p) == 4 and p[2].isdigit() and p[3] == "commit_success.txt")


@pytest.mark.slow
def test_prepare_train_kill_resume_eval_embed_search_all_on_gs(gcs, tmp_path):
  env, url = gcs
  src = _videos(tmp_path / "videos")
  data, run, index = f"gs://{BUCKET}/data", f"gs://{BUCKET}/run", f"gs://{BUCKET}/index"

  out = _run([*CLI, "prepare", str(src), data, "--short-side", "24", "--videos-per-shard", "4",
              "--test-fraction", "0.25", "--no-progress"], env, tmp_path)
  info = json.loads(_read(url, "data/dataset_info.json"))
  shards = [s for split in info["splits"].values() for s in split["shards"]]
  assert set(_objects(url, "data/")) >= {f"data/{s}" for s in shards} and f"tfrecord:{data}" in out
  assert sum(s["num_examples"] for s in info["splits"].values()) == 12

  train = [sys.executable, str(ROOT / "train.py"), "--config", "infonce", "--workdir", run,
           f"--config.data.name=tfrecord:{data}", "--config.data.train_split=train",
           "--config.data.eval_split=test", *TINY]
  first = subprocess.Popen([*train, "--config.train.num_steps=100000"], env=env, cwd=tmp_path,
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
  try:
    deadline = time.time() + 300
    while not _committed_steps(url):
      assert time.time() < deadline and first.poll() is None, first.stdout.read()[-3000:] if first.poll() else "slow"
      time.sleep(0.5)
    # A second train on the same gs:// workdir while the first runs: refused in one line.
    second = subprocess.run([*train, "--config.train.num_steps=2"], env=env, cwd=tmp_path, capture_output=True,
                            text=True, timeout=300)
    busy = [line for line in second.stderr.splitlines() if "in use by pid" in line]
    assert second.returncode != 0 and len(busy) == 1 and f"in use by pid {first.pid} " in busy[0], second.stderr[-3000:]
    first.send_signal(signal.SIGKILL)  # no save, no cleanup: the lock and maybe a half-written save stay
    first.wait(timeout=60)
  finally:
    first.kill()
  done = _committed_steps(url)[-1]
  assert "run/train.lock" in _objects(url, "run/")

  out = _run([*train, f"--config.train.num_steps={done + 2}"], env, tmp_path)
  assert "is gone" in out and f"resumed from {run}/checkpoints at step {done}" in out, out[-3000:]
  steps = [json.loads(line)["step"] for line in _read(url, "run/metrics.jsonl").decode().splitlines()]
  assert steps == sorted(set(steps)) and steps[-1] == done + 2  # one run's lines: redone steps logged once
  assert done + 2 in _committed_steps(url) and "run/train.lock" not in _objects(url, "run/")
  assert any(n.startswith("run/events.out.tfevents") for n in _objects(url, "run/"))

  _run([sys.executable, str(ROOT / "eval.py"), "--workdir", run, "--baselines", "none", "--no-progress",
        "--config.eval.finetune_epochs=0", "--config.eval.probe_steps=20"], env, tmp_path)
  report = json.loads(_read(url, "run/eval/report.json"))
  assert report["checkpoint_step"] == done + 2 and report["workdir"] == run

  # Two embeds into one new gs:// index at once, one of them over half the other's videos: each
  # video lands once (the second to append drops the paths the first added), in the same index.
  embeds = [subprocess.Popen([*CLI, "embed", "--workdir", run, "--videos", str(videos), "--out", index, "--no-progress"],
                             env=env, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
            for videos in (src, src / "right")]
  outs = [p.communicate(timeout=400)[0] for p in embeds]
  assert [p.returncode for p in embeds] == [0, 0], outs[0][-2000:] + outs[1][-2000:]
  meta = json.loads(_read(url, "index/index.json"))
  assert meta["count"] == 12 and meta["workdir"] == run and meta["version"] == 2
  items = [json.loads(line) for s in meta["shards"] for line in _read(url, f"index/{s['items']}").decode().splitlines()]
  assert sorted(it["path"] for it in items) == sorted(str(p) for p in src.rglob("*.mp4"))  # each once
  out = _run([*CLI, "search", "--index", index, "--query", str(src / "right" / "right0.mp4"), "--k", "3",
              "--html", f"gs://{BUCKET}/search.html"], env, tmp_path)
  first = next(line.split() for line in out.splitlines() if line.split()[:1] == ["1"])  # rank, score, path, label
  assert first[2].endswith("right0.mp4") and float(first[1]) > 0.999, out[-2000:]  # the query itself ranks first
  assert b"<html" in _read(url, "search.html")
  assert not (tmp_path / "gs:").exists()  # nothing went to a local folder named after the URL


def test_a_scheme_without_a_filesystem_is_one_line_naming_the_package(tmp_path):
  with pytest.raises(SoraError, match=r"s3:// paths need s3fs; install it \(pip install s3fs\)"):
    storage.path("s3://bucket/run")
  with pytest.raises(SoraError, match="no filesystem knows the scheme nosuch://"):
    storage.path("nosuch://bucket/run")
  proc = subprocess.run([*CLI, "train", "--config", "infonce", "--workdir", "nosuch://b/run"], capture_output=True,
                        text=True, cwd=tmp_path, timeout=120)
  errors = [line for line in proc.stderr.splitlines() if line.startswith("sora-jax: error")]
  assert proc.returncode == 1 and len(errors) == 1 and "nosuch://" in errors[0], proc.stderr
  assert "Traceback" not in proc.stderr
  assert not (tmp_path / "nosuch:").exists()


def test_local_paths_stay_local_and_urls_stay_urls(tmp_path, monkeypatch):
  monkeypatch.chdir(tmp_path)
  assert storage.path("run") == storage.path(tmp_path / "run") and storage.is_local(storage.path("~/x"))
  assert str(storage.path("file://" + str(tmp_path / "a"))) == str(tmp_path / "a")
  assert storage.scheme("gs://b/x") == "gs" and not storage.is_local("gs://b/x")
  from sora_jax.config import defaults
  from sora_jax.config.datasets import data_dir, parse_data_name
  config = defaults()
  config.data.data_dir = "gs://b/datasets"  # reaches TFDS as a URL (pathlib made it gs:/b/datasets)
  assert data_dir(config) == "gs://b/datasets" and parse_data_name("tfrecord:gs://b/d") == ("tfrecord", "gs://b/d")


def test_object_store_paths_go_through_fsspec_whatever_the_environment_says():
  """With TensorFlow installed (always, here) etils would route gs:// through tf.io.gfile, a stack
  no test runs, unless EPATH_USE_TF=false; importing sora_jax.storage makes that choice, so our
  paths and those orbax builds from them use fsspec even when the environment asks for TF."""
  env = {**os.environ, "EPATH_USE_TF": "true", "STORAGE_EMULATOR_HOST": "http://127.0.0.1:9"}  # gcsfs: no credential probe
  run = lambda code: subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
  probe = ("from etils import epath; from etils.epath import backend\n"
           "assert epath.Path('gs://b/x')._backend is backend.tf_backend  # etils alone: TF (and cached)\n"
           "from sora_jax import storage\n"
           "assert storage.path('gs://b/run')._backend is backend.fsspec_backend\n"
           "assert epath.Path('gs://b/run/checkpoints')._backend is backend.fsspec_backend  # as orbax builds them\n"
           "print('fsspec')")
  proc = run(probe)
  assert proc.returncode == 0 and proc.stdout.strip() == "fsspec", proc.stderr[-2000:]


_LOCK_PROBE = """
import sys
from sora_jax import atomic, storage
b = sys.argv[1]
print("raced", atomic.create_exclusive(f"gs://{b}/locks/raced.lock", "ours"),
      storage.path(f"gs://{b}/locks/raced.lock").read_text())
print("landed", atomic.create_exclusive(f"gs://{b}/locks/landed.lock", "ours"))
print("lost", atomic.create_exclusive(f"gs://{b}/locks/lost.lock", "ours"))
print("taken", atomic.create_exclusive(f"gs://{b}/locks/lost.lock", "second"))
print("release-theirs", atomic.remove_if_holding(f"gs://{b}/locks/raced.lock", "ours"),
      storage.path(f"gs://{b}/locks/raced.lock").exists())
print("release-ours", atomic.remove_if_holding(f"gs://{b}/locks/landed.lock", "ours"),
      storage.path(f"gs://{b}/locks/landed.lock").exists())
storage.write_text(f"gs://{b}/locks/lost.lock", "taken over")  # another run replaced our lock
print("release-replaced", atomic.remove_if_holding(f"gs://{b}/locks/lost.lock", "ours"),
      storage.path(f"gs://{b}/locks/lost.lock").read_text())
import json, socket, time
from sora_jax.training.lock import WorkdirLock, WorkdirBusy
stale = {"pid": 1, "host": "a-preempted-vm", "since": "then", "token": "t"}
storage.write_text(f"gs://{b}/live/train.lock", json.dumps(dict(stale, expires=time.time() + 300)))
try:
  WorkdirLock(f"gs://{b}/live").__enter__()
except WorkdirBusy as e:
  print("live-refused", "in use by pid 1 on host a-preempted-vm" in str(e))
storage.write_text(f"gs://{b}/run/train.lock", json.dumps(dict(stale, expires=time.time() - 30)))
said = []
with WorkdirLock(f"gs://{b}/run", said.append):
  held = json.loads(storage.path(f"gs://{b}/run/train.lock").read_text())
  print("stale-taken", held["host"] == socket.gethostname(), said[0].split(": its")[1][:14])
print("released", storage.path(f"gs://{b}/run/train.lock").exists())
"""


@pytest.fixture(scope="module")
def faulty_gcs():
  """(env, URL) of an emulator with GCS's preconditions where some uploads answer 503 (gcsfs retries
  them): each lock object's first upload, and the third commit of the index at ix/."""
  faults = ["locks/raced.lock=raced:theirs", "locks/landed.lock=landed", "locks/lost.lock=lost",
            "ix/index.json@3=landed"]
  proc, url = _start_emulator(*[f"--fail-upload={f}" for f in faults])
  yield {**os.environ, "STORAGE_EMULATOR_HOST": url, "GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT": "false"}, url
  proc.terminate()
  proc.wait(timeout=30)


def _probe(code: str, env: dict) -> list[str]:
  out = subprocess.run([sys.executable, "-c", code, BUCKET], capture_output=True, text=True, env=env, timeout=180)
  assert out.returncode == 0, out.stderr[-3000:]
  return out.stdout.splitlines()


def test_a_gs_lock_is_a_conditional_create_that_survives_lost_and_retried_uploads(faulty_gcs):
  """An upload that lost the race to another writer's does not hold the lock (the write-then-read-back
  lock it replaces overwrote the other and held it too); one whose first attempt landed before its
  answer was lost does; releasing deletes only our own object. A train.lock whose lease is live is
  refused; one whose lease expired (a preempted VM's) is taken over, then released."""
  assert _probe(_LOCK_PROBE, faulty_gcs[0]) == [
      "raced False theirs", "landed True", "lost True", "taken False", "release-theirs False True",
      "release-ours True False", "release-replaced False taken over", "live-refused True",
      "stale-taken True  lease expired", "released False"]


_INDEX_PROBE = """
import sys, numpy as np
from sora_jax import atomic
from sora_jax.apps.index import Index
ix, x = f"gs://{sys.argv[1]}/ix", np.eye(6, dtype=np.float32)
a = Index.create(ix, dim=6)
b = Index.load(ix)
commit, calls = atomic.replace_if_version, []
def b_commits_first(p, text, version):  # two writers in the critical section: a lock deleted by hand
  if not calls:
    calls.append("b")
    calls.append(b._append_locked(x[3:], [{"path": p} for p in "def"], None))
  ok = commit(p, text, version)
  calls.append(ok)
  return ok
atomic.replace_if_version = b_commits_first
print("added", a.append(x[:4], [{"path": p} for p in "abcd"]), calls)
idx = Index.load(ix)
print("rows", *(f"{p}{int(np.argmax(e))}" for p, e in zip(idx.paths, idx.embeddings())))
"""


def test_a_gs_index_commit_is_conditional_so_writers_whose_lock_failed_keep_every_row_paired(faulty_gcs):
  """a reads index.json, b commits, a's commit (upload conditional on the generation a read) is
  refused: a reads the new index and appends again, without the path b added. a's second commit
  lands but its answer is lost (503); the retry is refused (412) and read back as ours."""
  assert _probe(_INDEX_PROBE, faulty_gcs[0]) == [
      "added 3 ['b', True, 3, False, True]", "rows d3 e4 f5 a0 b1 c2"]
