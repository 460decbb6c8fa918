"""Exact search in JAX beside faiss IndexFlatIP, and faiss IVF's recall@10 and speed-up.

Same random L2-normalised 256-d embeddings and queries for every method, in one process:
  - throughput: `--queries` queries in one call, queries/s = queries / median time; JAX with the
    index's blocks resident on the device (`ExactSearch`), and streamed: every call reads the
    index in blocks from a memory-mapped .npy (the bigger-than-device-memory path);
  - latency: one query per call, median over `--repeats` calls;
  - IVF (IndexIVFFlat, nlist = 4 sqrt(N), for each --nprobe): recall@10 against exact search,
    speed-up over IndexFlatIP at the same batch (uniform random vectors have no cluster
    structure: the worst case for IVF recall, so the sweep shows the trade-off);
  - peak memory: process peak RSS (getrusage) after each size, tracemalloc peak of host
    allocations during the JAX search (the streamed blocks), and the index's size.
Prints a table, then one JSON line.

  .venv/bin/python bench/search.py                    # 100k and 1M rows
  .venv/bin/python bench/search.py --single-thread    # both on one core (busy machines)
  .venv/bin/python bench/search.py --sizes 20000 --repeats 2   # smoke run
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import sys
import time
import tracemalloc

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))


def _median_time(fn, repeats):
  fn()  # warm-up (compile, page in)
  times = []
  for _ in range(repeats):
    t = time.perf_counter()
    fn()
    times.append(time.perf_counter() - t)
  return statistics.median(times)


def _rss_gib():
  return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB on Linux


def _unit_rows(rng, n, d, chunk=131072, centers=None, noise=0.0):
  """Uniform on the sphere, or (centers [C, d]) a unit centre plus Gaussian noise per row."""
  out = np.empty((n, d), np.float32)
  for i in range(0, n, chunk):
    x = rng.standard_normal((min(chunk, n - i), d), dtype=np.float32)
    if centers is not None:
      x = centers[rng.integers(0, len(centers), len(x))] + noise * x / np.sqrt(d)
    out[i:i + len(x)] = x / np.linalg.norm(x, axis=1, keepdims=True)
  return out


def bench_size(n, args, rng):
  import faiss
  from sora_jax.apps import search
  from sora_jax.parallel import topk

  d, k = args.dim, args.k
  centers = _unit_rows(rng, args.clusters, d) if args.clusters else None
  x = _unit_rows(rng, n, d, centers=centers, noise=args.noise)
  q = _unit_rows(rng, args.queries, d, centers=centers, noise=args.noise)
  row = {"n": n, "dim": d, "index_gib": x.nbytes / 2**30, "data": f"{args.clusters} clusters" if args.clusters else "uniform"}

  mesh = topk.default_mesh()
  tracemalloc.start()
  searcher = topk.ExactSearch(x, block_size=args.block_size, mesh=mesh)  # blocks resident on the device
  exact_s, exact_r = searcher.search(q, k)
  row["jax_tracemalloc_peak_mib"] = tracemalloc.get_traced_memory()[1] / 2**20
  tracemalloc.stop()
  row["jax_qps"] = args.queries / _median_time(lambda: searcher.search(q, k), args.repeats)
  row["jax_latency_ms"] = 1e3 * _median_time(lambda: searcher.search(q[:1], k), args.repeats)
  del searcher
  # Streamed: every call reads the index from a memory-mapped .npy in blocks (bigger-than-device path).
  path = os.path.join(args.tmp, f"sora_bench_{n}.npy")
  np.save(path, x)
  mm = np.load(path, mmap_mode="r")
  s_s, s_r = topk.exact_search(q, mm, k, block_size=args.block_size, mesh=mesh)
  assert np.array_equal(s_r, exact_r), "streamed search disagrees with resident search"
  row["jax_streamed_qps"] = args.queries / _median_time(
      lambda: topk.exact_search(q, mm, k, block_size=args.block_size, mesh=mesh), args.repeats)
  del mm
  os.remove(path)

  flat = faiss.IndexFlatIP(d)
  flat.add(x)
  f_s, f_r = flat.search(q, k)
  row["agree_with_faiss_top10"] = float(np.mean([len(set(a) & set(b)) / k for a, b in zip(f_r, exact_r)]))
  t = _median_time(lambda: flat.search(q, k), args.repeats)
  row["faiss_flat_qps"] = args.queries / t
  row["faiss_flat_latency_ms"] = 1e3 * _median_time(lambda: flat.search(q[:1], k), args.repeats)
  row["jax_over_faiss_qps"] = row["jax_qps"] / row["faiss_flat_qps"]
  del flat

  nlist = int(min(4 * np.sqrt(n), args.ivf_train // 39))
  t0 = time.perf_counter()
  ivf = search.IVFIndex.build(x, nlist=nlist, train_size=args.ivf_train)
  row["ivf_build_s"] = time.perf_counter() - t0
  row["ivf_nlist"], row["ivf"] = nlist, []
  for nprobe in args.nprobe:
    ivf.index.nprobe = nprobe
    _, a_r = ivf.search(q, k)
    qps = args.queries / _median_time(lambda: ivf.search(q, k), args.repeats)
    row["ivf"].append({"nprobe": nprobe, "recall_at_10": search.overlap_with_exact(a_r, exact_r), "qps": qps,
                       "speedup_over_flat": qps / row["faiss_flat_qps"], "speedup_over_jax": qps / row["jax_qps"]})
  row["peak_rss_gib"] = _rss_gib()
  del ivf, x
  return row


def _rounded(x):
  if isinstance(x, float):
    return round(x, 4)
  if isinstance(x, dict):
    return {k: _rounded(v) for k, v in x.items()}
  if isinstance(x, list):
    return [_rounded(v) for v in x]
  return x


def main(argv=None):
  p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--sizes", type=int, nargs="+", default=[100_000, 1_000_000])
  p.add_argument("--dim", type=int, default=256)
  p.add_argument("--queries", type=int, default=256, help="queries per throughput call")
  p.add_argument("--k", type=int, default=10)
  p.add_argument("--block-size", type=int, default=65536)
  p.add_argument("--nprobe", type=int, nargs="+", default=[8, 32, 128])
  p.add_argument("--ivf-train", type=int, default=100_000)
  p.add_argument("--repeats", type=int, default=5)
  p.add_argument("--seed", type=int, default=0)
  p.add_argument("--tmp", default="/tmp", help="folder for the memory-mapped copy of the index (streamed run)")
  p.add_argument("--clusters", type=int, default=0,
                 help="0: uniform random unit vectors; C > 0: C random centres plus noise (closer to real embeddings)")
  p.add_argument("--noise", type=float, default=1.0, help="noise norm relative to a centre's, with --clusters")
  p.add_argument("--single-thread", action="store_true",
                 help="one thread for both XLA and faiss (a fair comparison on a busy machine)")
  args = p.parse_args(argv)
  if args.single_thread:  # before jax/faiss are imported
    os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") +
                               " --xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1")
    os.environ["OMP_NUM_THREADS"] = "1"

  import faiss
  import jax
  rng = np.random.default_rng(args.seed)
  load_before = round(os.getloadavg()[0], 1)
  rows = [bench_size(n, args, rng) for n in args.sizes]

  env = {"devices": f"{jax.device_count()}x{jax.devices()[0].platform}", "cpus": os.cpu_count(),
         "machine": platform.machine(), "jax": jax.__version__, "faiss": faiss.__version__,
         "faiss_threads": faiss.omp_get_max_threads(),
         "xla_flags": os.environ.get("XLA_FLAGS", "").strip(), "load_avg_1m": [load_before, round(os.getloadavg()[0], 1)]}
  data = f"{args.clusters} clusters, noise {args.noise}" if args.clusters else "uniform"
  print(f"exact top-{args.k} over random {args.dim}-d unit vectors ({data}), {args.queries} queries/call; {env}")
  head = ("N", "jax q/s", "streamed q/s", "faiss q/s", "jax/faiss", "jax 1q ms", "faiss 1q ms", "peak RSS GiB")
  print(" | ".join(f"{h:>12}" for h in head))
  for r in rows:
    vals = (r["n"], f"{r['jax_qps']:.0f}", f"{r['jax_streamed_qps']:.0f}", f"{r['faiss_flat_qps']:.0f}", f"{r['jax_over_faiss_qps']:.2f}",
            f"{r['jax_latency_ms']:.1f}", f"{r['faiss_flat_latency_ms']:.1f}", f"{r['peak_rss_gib']:.2f}")
    print(" | ".join(f"{v:>12}" for v in vals))
  print("faiss IndexIVFFlat (approximate) against exact search on the same data:")
  head = ("N", "nlist", "nprobe", "IVF q/s", "vs flat", "vs jax", "recall@10")
  print(" | ".join(f"{h:>12}" for h in head))
  for r in rows:
    for v in r["ivf"]:
      vals = (r["n"], r["ivf_nlist"], v["nprobe"], f"{v['qps']:.0f}", f"{v['speedup_over_flat']:.1f}x",
              f"{v['speedup_over_jax']:.1f}x", f"{v['recall_at_10']:.3f}")
      print(" | ".join(f"{x:>12}" for x in vals))
  print(json.dumps({"bench": "search", "env": env, "args": vars(args),
                    "results": _rounded(rows)}))


if __name__ == "__main__":
  main()
