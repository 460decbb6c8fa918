"""The on-disk index (append, reload, lookup, crash safety) and the offline HTML page."""

import base64
import json

import numpy as np
import pytest

from sora_jax.apps import html
from sora_jax.apps.index import Index
from sora_jax.apps.search import search_index
from sora_jax.errors import DataError


def _records(paths, label=1):
  return [{"path": p, "label": label} for p in paths]


def test_append_reload_and_search_finds_itself(tmp_path):
  rng = np.random.default_rng(0)
  x = rng.standard_normal((30, 8)).astype(np.float32)
  idx = Index.create(tmp_path / "ix", dim=8, step=7, config_hash="abc")
  idx.append(x[:20], _records([f"/v/{i}.mp4" for i in range(20)]))
  idx.append(x[20:], _records([f"/v/{i}.mp4" for i in range(20, 30)], label=2))
  idx = Index.load(tmp_path / "ix")
  assert idx.count == 30 and idx.step == 7 and idx.config_hash == "abc"
  np.testing.assert_array_equal(idx.ids, np.arange(30))
  np.testing.assert_array_equal(idx.labels, [1] * 20 + [2] * 10)
  np.testing.assert_allclose(np.linalg.norm(idx.embeddings(), axis=1), 1.0, atol=1e-6)
  assert idx.row_of("/v/25.mp4") == 25 and idx.row_of("12") == 12 and idx.row_of("/v/none.mp4") is None
  hits = search_index(idx, x[[3, 27]], k=4)
  assert [h[0]["row"] for h in hits] == [3, 27]
  assert hits[1][0]["path"] == "/v/27.mp4" and hits[1][0]["score"] == pytest.approx(1.0, abs=1e-5)
  assert [h["rank"] for h in hits[0]] == [1, 2, 3, 4]


def test_an_append_that_never_committed_is_ignored_and_its_files_never_listed(tmp_path, monkeypatch):
  from sora_jax import atomic
  x = np.eye(4, dtype=np.float32)
  idx = Index.create(tmp_path, dim=4, dtype="float16")
  idx.append(x[:2], _records(["a", "b"]))

  def crash(*args):
    raise KeyboardInterrupt  # the process dies after writing its files, before index.json
  monkeypatch.setattr(atomic, "replace_if_version", crash)
  with pytest.raises(KeyboardInterrupt):
    idx.append(x[2:], _records(["zombie", "z2"]))
  monkeypatch.undo()
  idx = Index.load(tmp_path)
  assert idx.paths == ["a", "b"] and len(list(tmp_path.glob("items-*.jsonl"))) == 2  # one committed, one orphan
  idx.append(x[2:], _records(["c", "d"]))
  idx = Index.load(tmp_path)
  assert idx.paths == ["a", "b", "c", "d"] and idx.embeddings().dtype == np.float32
  np.testing.assert_array_equal(idx.embeddings(), x)
  assert idx.shards()[0].dtype == np.float16


def test_a_version_1_index_is_read_and_appended_to(tmp_path):
  """Version 1 kept every item in items.jsonl (lines past `count`: an append that never committed)."""
  x = np.eye(4, dtype=np.float32)
  np.save(tmp_path / "emb-00000.npy", x[:2])
  (tmp_path / "items.jsonl").write_text("".join(json.dumps({"id": i, "path": p, "label": 1}) + "\n"
                                                for i, p in enumerate(["a", "b", "zombie"])))
  (tmp_path / "index.json").write_text(json.dumps({
      "version": 1, "dim": 4, "dtype": "float32", "count": 2, "shards": [{"file": "emb-00000.npy", "count": 2}],
      "step": 3, "config_hash": "h", "workdir": None, "label_names": None, "extra": {}, "text_dim": None}))
  assert Index.load(tmp_path).paths == ["a", "b"]
  assert Index.load(tmp_path).append(x[1:], _records(["b", "c", "d"])) == 2  # "b" is there already
  idx = Index.load(tmp_path)
  assert idx.paths == ["a", "b", "c", "d"] and idx.meta["version"] == 2 and idx.ids.tolist() == [0, 1, 2, 3]
  np.testing.assert_array_equal(idx.embeddings(), x)


def test_a_writer_whose_lock_failed_it_cannot_commit_over_another(tmp_path, monkeypatch):
  """Two writers inside the critical section at once (a lock deleted by hand while its holder ran):
  the one that commits second finds index.json changed since it read it, drops its files, reads the
  new index and appends again; every row keeps its own path, a path both add lands once."""
  from sora_jax import atomic
  x = np.eye(6, dtype=np.float32)
  a = Index.create(tmp_path, dim=6)
  b = Index.load(tmp_path)
  commit = atomic.replace_if_version
  calls = []

  def b_commits_first(p, text, version):
    if not calls:
      calls.append(1)
      assert b._append_locked(x[3:], _records(["d", "e", "f"]), None) == 3  # b commits in between
    return commit(p, text, version)
  monkeypatch.setattr(atomic, "replace_if_version", b_commits_first)
  assert a.append(x[:4], _records(["a", "b", "c", "d"])) == 3  # "d" is b's by then
  monkeypatch.undo()
  idx = Index.load(tmp_path)
  assert idx.paths == ["d", "e", "f", "a", "b", "c"] and idx.count == 6
  rows = {p: int(np.argmax(e)) for p, e in zip(idx.paths, idx.embeddings())}
  assert rows == {"a": 0, "b": 1, "c": 2, "d": 3, "e": 4, "f": 5}  # each row with its own path
  assert len(list(tmp_path.glob("emb-*.npy"))) == 2  # a's first files were removed


def test_index_errors(tmp_path):
  with pytest.raises(DataError, match="no index"):
    Index.load(tmp_path / "missing")
  idx = Index.create(tmp_path / "ix", dim=4)
  with pytest.raises(DataError, match="already exists"):
    Index.create(tmp_path / "ix", dim=4)
  with pytest.raises(DataError, match="do not fit index dim 4"):
    idx.append(np.zeros((2, 5)), _records(["a", "b"]))
  (tmp_path / "ix" / "index.json").write_text("{not json")
  with pytest.raises(DataError, match="corrupt"):
    Index.load(tmp_path / "ix")


def test_html_page_is_self_contained(tmp_path):
  from PIL import Image
  import io
  frames = np.zeros((8, 16, 24, 3), np.uint8)
  frames[:, :, :12, 0] = 255
  out = html.write_html(tmp_path / "r.html", {"path": "q<1>.mp4", "frames": frames},
                        [{"rank": 1, "score": 0.9, "path": "a.mp4", "label": 3, "frames": frames},
                         {"rank": 2, "score": 0.5, "path": "gone.mp4", "label": -1, "frames": None}])
  page = out.read_text()
  assert "q&lt;1&gt;.mp4" in page and "(no preview)" in page and "http" not in page
  b64 = page.split("data:image/png;base64,")[1].split('"')[0]
  img = np.asarray(Image.open(io.BytesIO(base64.b64decode(b64))))
  assert img.shape[0] == 64 and img[10, 5, 0] == 255 and img[10, 5, 1] == 0  # red left half of frame 0


_WRITER = """
import os, sys, time, numpy as np
from sora_jax.apps.index import Index
out, name, other = sys.argv[1], sys.argv[2], sys.argv[3]
idx = Index.open_or_create(out, dim=4)  # both open the index before either appends
open(os.path.join(os.path.dirname(out), "ready-" + name), "w").close()
while not os.path.exists(os.path.join(os.path.dirname(out), "ready-" + other)):
  time.sleep(0.01)
rng = np.random.default_rng(abs(hash(name)) % 2**32)
for i in range(15):
  idx.append(rng.standard_normal((3, 4)), [{"path": f"{name}/{i}/{j}", "label_name": f"{name}{(i + j) % 4}"}
                                           for j in range(3)])
  time.sleep(0.01)  # the two writers' appends interleave
"""


def test_two_processes_appending_to_one_index_both_land(tmp_path):
  import subprocess
  import sys
  (tmp_path / "writer.py").write_text(_WRITER)
  procs = [subprocess.Popen([sys.executable, str(tmp_path / "writer.py"), str(tmp_path / "ix"), name, other],
                            stderr=subprocess.PIPE, text=True) for name, other in (("a", "b"), ("b", "a"))]
  for p in procs:
    assert p.wait(timeout=120) == 0, p.stderr.read()[-2000:]
  idx = Index.load(tmp_path / "ix")
  assert idx.count == 90 and len(set(idx.paths)) == 90 and len(idx.meta["shards"]) == 30
  assert sorted(idx.ids.tolist()) == list(range(90))
  np.testing.assert_allclose(np.linalg.norm(idx.embeddings(), axis=1), 1.0, atol=1e-5)
  # Each writer brought its own new label names: all are kept, and every row's number names its label.
  assert sorted(idx.meta["label_names"]) == [f"{w}{k}" for w in "ab" for k in range(4)]
  assert all(idx.meta["label_names"][it["label"]] == it["label_name"] for it in idx.items)


def test_labels_are_numbered_by_name_against_the_index_list(tmp_path):
  idx = Index.create(tmp_path / "ix", dim=4, label_names=["cat", "dog"])
  x = np.eye(4, dtype=np.float32)
  # A writer that numbered its labels from an older view of the list: names win over its numbers.
  idx.append(x[:3], [{"path": "a", "label": 0, "label_name": "dog"}, {"path": "b", "label": 7, "label_name": "emu"},
                     {"path": "c", "label": 5}], label_names=["bee", "cat"])
  idx = Index.load(tmp_path / "ix")
  assert idx.meta["label_names"] == ["cat", "dog", "bee", "emu"]
  assert idx.labels.tolist() == [1, 3, 5]


def test_embeddings_that_are_not_finite_are_refused_and_never_ranked(tmp_path):
  idx = Index.create(tmp_path / "ix", dim=4)
  bad = np.eye(4, dtype=np.float32)
  bad[1, 2] = np.nan
  with pytest.raises(DataError, match=r"rows \[1\] are not finite"):
    idx.append(bad, _records(["a", "b", "c", "d"]))
  assert Index.load(tmp_path / "ix").count == 0
  idx.append(np.eye(4, dtype=np.float32), _records(["a", "b", "c", "d"]))
  shard = tmp_path / "ix" / idx.meta["shards"][0]["file"]  # an index damaged on disk: a NaN row
  rows = np.load(shard)
  rows[1] = np.nan
  np.save(shard, rows)
  hits = search_index(Index.load(tmp_path / "ix"), np.eye(4, dtype=np.float32)[[0]], k=4)[0]
  assert hits[0]["row"] == 0 and hits[0]["score"] == pytest.approx(1.0)
  assert 1 not in [h["row"] for h in hits] and all(np.isfinite(h["score"]) for h in hits)  # never ranked


def test_approximate_search_builds_without_the_rows_that_are_not_finite(tmp_path):
  pytest.importorskip("faiss")
  rng = np.random.default_rng(2)
  x = rng.standard_normal((200, 8)).astype(np.float32)
  idx = Index.create(tmp_path / "ix", dim=8)
  idx.append(x, _records([str(i) for i in range(200)]))
  shard = tmp_path / "ix" / idx.meta["shards"][0]["file"]
  rows = np.load(shard)
  rows[5] = np.nan
  np.save(shard, rows)
  hits = search_index(Index.load(tmp_path / "ix"), x[[7]], k=5, approximate=True)[0]
  assert hits[0]["row"] == 7 and 5 not in [h["row"] for h in hits]


def test_an_index_whose_metadata_and_arrays_disagree_is_one_line(tmp_path, capsys):
  from sora_jax import cli
  idx = Index.create(tmp_path / "ix", dim=4)
  idx.append(np.eye(4, dtype=np.float32), _records(["a", "b", "c", "d"]))
  meta = json.loads((tmp_path / "ix" / "index.json").read_text())
  (tmp_path / "ix" / "index.json").write_text(json.dumps(dict(meta, dim=8)))  # arrays hold 4 columns
  assert cli.main(["search", "--index", str(tmp_path / "ix"), "--query", "a"]) == 1
  err = capsys.readouterr().err.strip()
  assert err.count("\n") == 0 and "holds an array of shape (4, 4) where index.json says (4, 8)" in err, err
  (tmp_path / "ix" / "index.json").write_text(json.dumps(meta))
  (tmp_path / "ix" / meta["shards"][0]["file"]).write_bytes(b"not an array")
  assert cli.main(["search", "--index", str(tmp_path / "ix"), "--query", "a"]) == 1
  err = capsys.readouterr().err.strip()
  assert err.count("\n") == 0 and "cannot be read" in err and "rebuild the index" in err, err
