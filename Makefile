# `make train` and `make test` create .venv (pinned by requirements.lock, plus the weight wheels of
# requirements-nodeps.txt without their dependencies) when it is missing.
PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
WORKDIR ?= runs/default
CONFIG ?= default

.PHONY: venv train eval test bench bench-smoke figures clean config-docs readme-config mutants

$(VENV)/.installed: pyproject.toml requirements.lock requirements-nodeps.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade uv
	$(VENV)/bin/uv pip install -q --python $(PY) --compile-bytecode -r requirements.lock
	$(VENV)/bin/uv pip install -q --python $(PY) --compile-bytecode --no-deps -r requirements-nodeps.txt
	$(VENV)/bin/uv pip install -q --python $(PY) --compile-bytecode --no-deps -e .
	touch $@

venv: $(VENV)/.installed

train: venv
	$(PY) train.py --config $(CONFIG) --workdir $(WORKDIR)
	$(PY) eval.py --workdir $(WORKDIR)

eval: venv
	$(PY) eval.py --workdir $(WORKDIR)

# Three worker processes on 2 cores, each test file on one of them (module fixtures stay shared): the
# workers wait on subprocesses, sleeps and retries for about a quarter of the time, which a third fills
# (2026-12-03, clean clone: 13:06 and 14:47 with 3 workers, 398 tests 14:54 and 16:02, 404 tests 15:26; 2026-12-04: 431 tests 15:49 and 14:49; 15:11-17:50 with 2 that day, on commits with a few more
# subprocess launches; one process took 15:21-16:48 on 2026-11-28; 2026-12-06, clean clone, 514 tests: 13:24 on an avx512 EPYC,
# where the avx2 EPYC of 2026-12-05 took 31 min for 512). TEST_WORKERS=0 runs it in one process.
TEST_WORKERS ?= 3
test: venv
	$(PY) -m pytest -q -n $(TEST_WORKERS) --dist loadfile tests

# Behaviour mutations the tests must catch (tests/mutants.py; minutes per mutant, not in CI).
mutants: venv
	$(PY) tests/mutants.py

# Every benchmark at its full size (figures.py reruns these plus the default train + eval: `make figures`).
bench: venv
	for f in $(filter-out bench/figures.py bench/figure_tables.py bench/mfu_table.py bench/trace_summary.py,$(wildcard bench/*.py)); do $(PY) $$f || exit 1; done

# Every benchmark at tiny sizes (a few minutes on 2 cores; in CI): each must end with its JSON line.
# The figures mean nothing; a benchmark that no longer runs fails here.
BENCH_SMOKE := "accelerator.py --smoke" "accelerator.py --layers --layer-frames 4 --layer-size 64 --steps 1 --pallas" "step_memory.py --smoke --config default --remat none,time --steps 1" \
  "model_step.py --batch 1 --iters 1 --warmup 1 --no-torch" "train_step.py --smoke" "input_pipeline.py --smoke" \
  "search.py --sizes 4096 --dim 32 --queries 8 --ivf-train 2048 --repeats 1 --nprobe 8 --block-size 1024" \
  "roofline.py --per-device-batch 8 --conv-ms 12" "roofline.py --config large_vit --per-device-batch 8" "roofline.py --config large_tubelet --per-device-batch 8" "generate.py --smoke" "text_ceiling.py --smoke" \
  "trace_summary.py --smoke --steps 2" "pod_input.py --smoke" "startup.py --smoke" "suite_compile.py --smoke" "suite_compile.py --memory --smoke"
bench-smoke: venv
	@for b in $(BENCH_SMOKE); do \
	  echo "== bench/$$b"; \
	  $(PY) bench/$$b > .bench-smoke.log 2>&1 || { tail -30 .bench-smoke.log; exit 1; }; \
	  tail -1 .bench-smoke.log | $(PY) -c "import json, sys; d = json.loads(sys.stdin.read()); assert isinstance(d, dict); print('   ok:', d.get('bench'))" \
	    || { echo "bench/$$b did not end with a JSON line"; tail -5 .bench-smoke.log; exit 1; }; \
	done; rm -f .bench-smoke.log

# Reruns the default train + eval on both built-in datasets and the benchmarks, then rewrites the
# README's figure tables from bench/results/figures.json (2-3 hours on 2 cores; run it on a quiet
# machine). `$(PY) bench/figures.py --only benchmarks` reruns one part; `--seeds 3 --reuse` adds seeds
# to the stored ones.
figures: venv
	$(PY) bench/figures.py

clean:
	rm -rf $(VENV) runs

# Rewrites docs/configs.md's config reference from the schema (tests/test_config.py checks it is current).
config-docs: venv
	$(PY) -c "import re, pathlib; from sora_jax.config import reference; p = pathlib.Path('docs/configs.md'); \
	b, e = '<!-- config-reference:begin (make config-docs rewrites this block) -->', '<!-- config-reference:end -->'; \
	s = p.read_text(); i, j = s.index(b) + len(b), s.index(e); p.write_text(s[:i] + '\n' + reference() + '\n' + s[j:])"
readme-config: config-docs
