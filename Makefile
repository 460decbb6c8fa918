# `make train` and `make test` create .venv (pinned by requirements.lock) when it is missing.
PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
WORKDIR ?= runs/default
CONFIG ?= default

.PHONY: venv train eval test bench clean readme-config mutants

$(VENV)/.installed: pyproject.toml requirements.lock
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade uv
	$(VENV)/bin/uv pip install -q --python $(PY) --compile-bytecode -r requirements.lock
	$(VENV)/bin/uv pip install -q --python $(PY) --compile-bytecode --no-deps -e .
	touch $@

venv: $(VENV)/.installed

train: venv
	$(PY) train.py --config $(CONFIG) --workdir $(WORKDIR)
	$(PY) eval.py --workdir $(WORKDIR)

eval: venv
	$(PY) eval.py --workdir $(WORKDIR)

test: venv
	$(PY) -m pytest -q tests

# Behaviour mutations the tests must catch (tests/mutants.py; minutes per mutant, not in CI).
mutants: venv
	$(PY) tests/mutants.py

bench: venv
	for f in bench/*.py; do $(PY) $$f || exit 1; done

clean:
	rm -rf $(VENV) runs

# Rewrites README's config reference from the schema (tests/test_config.py checks it is current).
readme-config: venv
	$(PY) -c "import re, pathlib; from sora_jax.config import reference; p = pathlib.Path('README.md'); \
	b, e = '<!-- config-reference:begin (make readme-config rewrites this block) -->', '<!-- config-reference:end -->'; \
	s = p.read_text(); i, j = s.index(b) + len(b), s.index(e); p.write_text(s[:i] + '\n' + reference() + '\n' + s[j:])"
