# Set-up and checks. Every target installs what it needs into .venv on first use.
# TORCH_SPEC: the CPU wheel of torch lies on the CI/dev machines' disk; on a GPU machine use
# `make TORCH_SPEC=torch ...` to let pip choose a CUDA build.
VENV ?= .venv
PY := $(VENV)/bin/python
TORCH_SPEC ?= torch==2.13.0

.PHONY: install demo test lint docs lowest pandas3 tutorials clean

$(VENV)/.installed: pyproject.toml scbranchdiff/_version.py
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q "$(TORCH_SPEC)"
	$(PY) -m pip install -q -e ".[test,docs,dev]"
	touch $@

install: $(VENV)/.installed

demo: install
	$(VENV)/bin/scbranchdiff demo --out demo_output

test: install
	$(PY) -m pytest -q

lint: install
	$(PY) -m ruff check scbranchdiff tests benchmarks tutorials .ci docs/conf.py

# re-run the tutorials with full settings and stamp their stored outputs with the version
tutorials: install
	$(PY) tutorials/execute.py

docs: install
	$(PY) -m sphinx -W -b html docs docs/_build/html

# Lowest supported versions: a fresh $(LOWEST_VENV) with every runtime dependency pinned to the
# lower bound in pyproject.toml (.ci/lowest_constraints.py), then a smoke test. torch is the one
# exception: it stays at $(TORCH_SPEC), the CPU wheel on disk (the registry's torch is a
# multi-GB CUDA build).
LOWEST_VENV ?= .venv-lowest
LOWEST_TESTS ?= tests/test_outputs.py tests/test_save_load.py tests/test_unseen_types.py

lowest:
	rm -rf $(LOWEST_VENV)
	python3 -m venv $(LOWEST_VENV)
	$(LOWEST_VENV)/bin/python -m pip install -q --upgrade pip
	$(LOWEST_VENV)/bin/python -m pip install -q "$(TORCH_SPEC)"
	python3 .ci/lowest_constraints.py --skip torch > $(LOWEST_VENV)/constraints.txt
	$(LOWEST_VENV)/bin/python -m pip install -q -c $(LOWEST_VENV)/constraints.txt . "pytest>=8" "hypothesis>=6.100"
	$(LOWEST_VENV)/bin/python -m pip list --format=freeze > $(LOWEST_VENV)/installed.txt
	$(LOWEST_VENV)/bin/pytest -q $(LOWEST_TESTS)

# pandas 3: anndata 0.12 still declares pandas < 3, so pip resolves pandas 2; the GPU images and
# many users run pandas 3 anyway. A fresh $(PANDAS3_VENV) with the package, then pandas 3 over
# it, then the tests that write and read files and go through scanpy.
PANDAS3_VENV ?= .venv-pandas3
PANDAS3_TESTS ?= tests/test_outputs.py tests/test_save_load.py tests/test_file_safety.py tests/test_cli.py tests/test_pl.py tests/test_bad_input.py

pandas3:
	rm -rf $(PANDAS3_VENV)
	python3 -m venv $(PANDAS3_VENV)
	$(PANDAS3_VENV)/bin/python -m pip install -q --upgrade pip
	$(PANDAS3_VENV)/bin/python -m pip install -q "$(TORCH_SPEC)"
	$(PANDAS3_VENV)/bin/python -m pip install -q ".[test]"
	$(PANDAS3_VENV)/bin/python -m pip install -q --no-deps "pandas>=3"
	$(PANDAS3_VENV)/bin/python -c "import pandas; assert int(pandas.__version__.split('.')[0]) >= 3, pandas.__version__"
	MPLBACKEND=Agg $(PANDAS3_VENV)/bin/pytest -q -p no:cacheprovider $(PANDAS3_TESTS)

clean:
	rm -rf $(VENV) $(LOWEST_VENV) $(PANDAS3_VENV) docs/_build demo_output .pytest_cache
