# Set-up and checks. Every target installs what it needs into .venv on first use.
# TORCH_SPEC: the CPU wheel of torch lies on the CI/dev machines' disk; on a GPU machine use
# `make TORCH_SPEC=torch ...` to let pip choose a CUDA build.
VENV ?= .venv
PY := $(VENV)/bin/python
TORCH_SPEC ?= torch==2.13.0

.PHONY: install demo test docs clean

$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q "$(TORCH_SPEC)"
	$(PY) -m pip install -q -e ".[test,docs]"
	touch $@

install: $(VENV)/.installed

demo: install
	$(VENV)/bin/scbranchdiff demo --out demo_output

test: install
	$(PY) -m pytest -q

docs: install
	$(PY) -m sphinx -W -b html docs docs/_build/html

clean:
	rm -rf $(VENV) docs/_build demo_output .pytest_cache
