"""The generated figure tables of the README and docs/, rendered from bench/results/figures.json alone.

`render(part, data)` gives one block (a stamp line, then a markdown table); `rewrite_all(texts,
results)` puts every block between its markers, in whichever file holds them. No jax here: tests
import it to check the documents.
"""

from __future__ import annotations

import re
import statistics

from sora_jax.evaluation.report import markdown_table, table_rows, text_markdown

BEGIN = "<!-- figures:{} (bench/figures.py writes this block from bench/results/figures.json) -->"
END = "<!-- figures:{}:end -->"


def _pct(x: float) -> str:
  return f"{100 * x:.1f}%"


def _model_step(d: dict) -> str:
  if "train_step_ratio_jax_over_torch" not in d:
    return f"forward {d['jax_forward_clips_per_s']} clips/s, train step {d['jax_train_step_clips_per_s']} (no PyTorch)"
  return (f"forward {d['jax_forward_clips_per_s']} vs {d['torch_forward_clips_per_s']} clips/s "
          f"(**{d['forward_ratio_jax_over_torch']:.2f}x**); train step {d['jax_train_step_clips_per_s']} vs "
          f"{d['torch_train_step_clips_per_s']} clips/s (**{d['train_step_ratio_jax_over_torch']:.2f}x**)")


def _train_step(d: dict) -> str:
  c = d["configs"]["infonce"]
  text = (f"compile {c['compile_s']:.1f} s, step {c['step_s']:.3f} s, {c['clips_per_s']:.1f} clips/s, "
          f"MFU {_pct(c['mfu'])} of a {d['matmul_gflops']:.0f} GFLOP/s matmul")
  loop = d.get("loop") or {}
  if "prefetch_0" in loop and "prefetch_2" in loop:
    text += (f"; the loop's wait for its batch {loop['prefetch_0']['host_wait_s'] * 1e3:.1f} ms vs "
             f"{loop['prefetch_2']['host_wait_s'] * 1e3:.1f} ms per step with prefetch")
  return text


def _input_pipeline(d: dict) -> str:
  st, readers = d["train_step"], d["readers"]
  base = readers["pread (local files)"]
  ms, no_hue = d["moving_shapes"], d["moving_shapes_no_hue"]
  return (f"moving_shapes {ms['clips_per_s']:,.0f} clips/s, CPU {ms['cpu_ms_per_batch']:.0f} ms per batch of "
          f"{d['batch_size']} ({no_hue['cpu_ms_per_batch']:.0f} without the hue shift); prepared real video "
          f"{d['real_pipeline']['clips_per_s']:,.0f} clips/s vs {d['real_python_loop']['clips_per_s']:,.0f} for "
          f"PyAV + numpy (**{d['real_ratio']:.1f}x**); input-bound ratio **{st['ratio']:.3f}** (target <= 1.05; "
          f"{len(st['block_ratios'])} blocks of {st['steps_per_mode'] // len(st['block_ratios'])} steps each "
          f"{st['block_ratios'][0]:.2f}-{st['block_ratios'][-1]:.2f}); "
          f"record reads at 8 threads: pread {base['threads_8']:,.0f}/s, " + ", ".join(
              f"{name} {r['threads_8'] / base['threads_8']:.2f}x" for name, r in readers.items() if r is not base))


def _accelerator(d: dict) -> str:
  rows = []
  for name, c in d["configs"].items():
    rows.append(f"{name} ({c['per_device_batch']} x {c['frames']} x {c['frame_size']}px, {c['dtype']}) "
                f"{c['step_s'] * 1e3:.0f} ms/step, MFU {_pct(c['mfu'])}, input-bound {c['input_bound_ratio']:.2f}x")
  return f"{'; '.join(rows)} (MFU of a {d['peak_flops_per_device'] / 1e9:.0f} GFLOP/s matmul)"


def _search(d: dict) -> str:
  rows = []
  for r in d["results"]:
    rows.append(f"{r['n']:,} rows: {r['jax_qps']:,.0f} vs {r['faiss_flat_qps']:,.0f} q/s "
                f"(**{r['jax_over_faiss_qps']:.1f}x**, top-10 agreeing {100 * r['agree_with_faiss_top10']:.0f}%)")
  return "; ".join(rows)


# key -> the command (bench/SCRIPT ARGS), what it measures, and its figure from the JSON line.
BENCHMARKS = {
    "model_step": {"script": "model_step.py", "args": [],
                   "what": "seed config `[8,16,64,64,3]`: JAX vs the same net and step in PyTorch (CPU)",
                   "figure": _model_step},
    "train_step": {"script": "train_step.py", "args": ["--skip-torch", "--skip-run", "--configs", "infonce", "--steps",
                                                        "3", "--loop-steps", "14"],
                   "what": "the `infonce` config's step at batch 64; the loop with and without device prefetch",
                   "figure": _train_step},
    "input_pipeline": {"script": "input_pipeline.py", "args": ["--windows", "5", "--batches", "8", "--steps", "4",
                                                                "--blocks", "8"],
                       "what": "tf.data vs a PyAV + numpy loop; the step fed by the pipeline vs from memory",
                       "figure": _input_pipeline},
    "accelerator": {"script": "accelerator.py", "args": ["--smoke"],
                    "what": "the accelerator script on this CPU (1 device, small shapes)", "figure": _accelerator},
    "search": {"script": "search.py", "args": ["--single-thread", "--sizes", "100000", "--repeats", "3"],
               "what": "exact JAX search vs faiss `IndexFlatIP`, 256-d, 256 queries, top-10, one thread",
               "figure": _search},
}


def stamp(m: dict) -> str:
  v = m["versions"]
  libs = ", ".join(f"{k.removesuffix('-cpu')} {v[k]}" for k in ("jax", "flax", "optax", "tensorflow", "tensorflow-cpu",
                                                                 "torch") if k in v)
  load = "-".join(f"{x:.1f}" for x in m["load"])
  return (f"Measured {m['date']} on {m['cpu']} ({m['isa']}), {m['cores']} cores, load average {load}; "
          f"Python {v['python']}, {libs}.")


def render(part: str, data: dict) -> str:
  if part == "benchmarks":
    lines = ["| command | what | figure |", "|---|---|---|"]
    lines += [f"| `bench/{b['script']}{''.join(' ' + a for a in b['args'])}` | {b['what']} | {b['figure'](data[key])} |"
              for key, b in BENCHMARKS.items() if key in data]
    return stamp(data["machine"]) + "\n\n" + "\n".join(lines)
  minutes = lambda s: f"{s / 60:.0f} min"
  text = text_markdown(data["report"].get("text"), data["report"].get("text_baselines"))[2:]  # without its heading
  seeds = data.get("seed_reports") or []
  reused = data.get("seeds_training_reused") or []
  reused = (f"; seed{'s' * (len(reused) > 1)} {', '.join(map(str, reused))}: trained by an earlier run of the same "
            "config, evaluated again" if reused else "")
  table = (f"Mean ± std over {len(seeds)} seeds (`--config.seed` 0..{len(seeds) - 1}{reused}"
           f"{'; the video-text rows below: seed 0' if text else ''}).\n\n" + seeds_table(seeds)
           ) if len(seeds) > 1 else markdown_table(data["report"])
  took = f"took {minutes(data['train_s'])}" if data.get("train_s") is not None else "was reused from an earlier run"
  return (f"{stamp(data['machine'])} `python {data['command']}` {took}, "
          f"`python eval.py{' --baselines ' + data['baselines'] if data.get('baselines') else ''}` "
          f"{minutes(data['eval_s'])}" + (" (seed 0)" if len(seeds) > 1 else "") + ".\n\n"
          + table + ("\n\n" + "\n".join(text).rstrip() if text else ""))


def seeds_table(reports: list[dict]) -> str:
  """The main table over several seeds' reports: each figure as mean ± sample std (same rows and
  columns as one report's table; cells without a figure, or the same in every seed, as one table shows them)."""
  tables = [table_rows(r) for r in reports]
  header, rows = tables[0]
  if any(t[0] != header or [r[0] for r in t[1]] != [r[0] for r in rows] for t in tables):
    raise ValueError("the seeds' reports have different models or columns; rerun them with one config")

  def cell(i, j):
    values = [t[1][i][j] for t in tables]
    if len(set(values)) == 1:  # the same in every seed (a frozen model, a cost, chance): as one table shows it
      return values[0]
    try:
      xs = [float(v) for v in values]
    except ValueError:
      return values[0]
    return f"{statistics.mean(xs):.1f} ± {statistics.stdev(xs):.1f}"

  out = [[r[0]] + [cell(i, j) for j in range(1, len(r))] for i, r in enumerate(rows)]
  lines = ["| " + " | ".join(header) + " |", "|" + "|".join(["---"] + ["--:"] * (len(header) - 1)) + "|"]
  return "\n".join(lines + ["| " + " | ".join(r) + " |" for r in out])


def block(part: str, data: dict) -> str:
  return f"{BEGIN.format(part)}\n{render(part, data)}\n{END.format(part)}"


def rewrite(text: str, results: dict, *, partial: bool = False) -> str:
  """`text` with each part's block replaced by its rendering (a part with no markers: an error,
  unless `partial`, where it is left to another file)."""
  for part, data in results.items():
    pattern = re.compile(re.escape(BEGIN.format(part)) + r".*?" + re.escape(END.format(part)), re.S)
    if not pattern.search(text):
      if partial:
        continue
      raise SystemExit(f"figures: no block for {part!r}; add the lines\n{BEGIN.format(part)}\n{END.format(part)}")
    text = pattern.sub(lambda _: block(part, data), text)
  return text


def documents(root) -> list:
  """The files that hold figure blocks: the README and every page under docs/."""
  return [root / "README.md", *sorted((root / "docs").glob("*.md"))]


def rewrite_all(texts: dict, results: dict) -> dict:
  """{file: text} with every part's block rendered; each part must have its block in exactly one file."""
  for part in results:
    holders = [f for f, t in texts.items() if BEGIN.format(part) in t]
    if len(holders) != 1:
      raise SystemExit(f"figures: the block for {part!r} is in {len(holders)} files ({', '.join(map(str, holders))}); "
                       f"it belongs in exactly one of README.md and docs/*.md")
  return {f: rewrite(t, results, partial=True) for f, t in texts.items()}
