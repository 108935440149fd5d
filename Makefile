# The course's two commands. Both create .venv when it is missing and install into it only what is
# not there yet (a stamp file remembers the install; editing pyproject.toml re-installs).
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
TORCH := torch==2.13.0
# Where torch comes from. On Linux the package index's default torch wheel is the CUDA build
# (~3 GB of CUDA libraries); the PyTorch CPU index has torch 2.13.0+cpu, which pip prefers over
# the index's 2.13.0 (a local version label sorts higher). Another build:
#   make lab TORCH_INDEX=https://download.pytorch.org/whl/cu126
# Where that index cannot be reached (an offline mirror, as on CI) pip warns and installs the
# pinned torch from the configured index instead.
TORCH_INDEX ?= https://download.pytorch.org/whl/cpu
PIP := $(PY) -m pip install --quiet --disable-pip-version-check
STAMP := $(VENV)/.installed
PYTEST_ARGS ?=

.PHONY: lab test exercises execute clean-venv

$(PY):
	$(PYTHON) -m venv $(VENV)

$(STAMP): pyproject.toml | $(PY)
	$(PIP) --extra-index-url $(TORCH_INDEX) --retries 1 --timeout 15 $(TORCH)
	$(PIP) -e ".[lab,test]"
	@$(PY) -c "import torch; print('installed torch', torch.__version__, '| CUDA', torch.version.cuda or 'none')"
	touch $(STAMP)

# JupyterLab keeps its normal token authentication; root (e.g. inside a container) needs --allow-root.
ALLOW_ROOT := $(if $(filter 0,$(shell id -u)),--allow-root,)

# The lab serves the course folder, so lessons, exercises and solutions are all reachable, and its
# default URL (the one it prints, and opens in a browser) is lesson 00. The course's JupyterLab
# defaults live in .jupyter/lab/settings/overrides.json (no news pop-up on first start); your own
# settings still override them. More options for `jupyter lab`: make lab LAB_ARGS="--port=9999"
LAB_FIRST := notebooks/00_einops.ipynb
LAB_FLAGS := --ServerApp.root_dir=. --LabApp.default_url=/lab/tree/$(LAB_FIRST) \
	--LabApp.app_settings_dir=.jupyter/lab/settings
LAB_ARGS ?=

lab: $(STAMP)
	@echo "JupyterLab on the course folder; lesson 00 opens at the URL printed below: .../lab/tree/$(LAB_FIRST)?token=..."
	$(VENV)/bin/jupyter lab $(ALLOW_ROOT) $(LAB_FLAGS) $(LAB_ARGS)

# The suite runs in TEST_JOBS pytest workers (pytest-xdist), each at one torch thread. On the 2-core
# box three workers finish first: 182-195 s for the whole course, against 196-200 s with two. Much of
# the suite waits (a kernel starting, a time limit running out, a grader's subprocess), and a
# third worker fills those waits; one pytest at two threads keeps only ~1.1 cores busy, and
# workers at two threads each oversubscribe the cores. `--dist loadfile` keeps every notebook's
# cells in one worker, in order, so each notebook still runs in one kernel.
# `make test TEST_JOBS=0` runs everything in one process.
TEST_JOBS ?= 3

test: $(STAMP)
	OMP_NUM_THREADS=1 $(VENV)/bin/pytest -q -n $(TEST_JOBS) --dist loadfile $(PYTEST_ARGS)

exercises: $(STAMP)
	$(PY) -m attn_tutorial exercises

execute: $(STAMP)
	$(PY) -m attn_tutorial execute --time notebooks/*.ipynb solutions/*.ipynb

clean-venv:
	rm -rf $(VENV)
