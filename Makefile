# `make train` and `make test` create .venv (pinned by requirements.lock) when it is missing.
PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
WORKDIR ?= runs/default
CONFIG ?= configs/default.py

.PHONY: venv train eval test bench clean

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

bench: venv
	for f in bench/*.py; do $(PY) $$f || exit 1; done

clean:
	rm -rf $(VENV) runs
