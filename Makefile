# The course's two commands. Both create .venv when it is missing and install into it only what is
# not there yet (a stamp file remembers the install; editing pyproject.toml re-installs).
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
TORCH := torch==2.13.0
STAMP := $(VENV)/.installed

.PHONY: lab test exercises execute clean-venv

$(PY):
	$(PYTHON) -m venv $(VENV)

$(STAMP): pyproject.toml | $(PY)
	$(PY) -m pip install --quiet --disable-pip-version-check $(TORCH)
	$(PY) -m pip install --quiet --disable-pip-version-check -e ".[lab,test]"
	touch $(STAMP)

# JupyterLab keeps its normal token authentication; root (e.g. inside a container) needs --allow-root.
ALLOW_ROOT := $(if $(filter 0,$(shell id -u)),--allow-root,)

lab: $(STAMP)
	$(VENV)/bin/jupyter lab $(ALLOW_ROOT) notebooks/00_einops.ipynb

test: $(STAMP)
	$(VENV)/bin/pytest -q

exercises: $(STAMP)
	$(PY) -m attn_tutorial exercises

execute: $(STAMP)
	$(PY) -m attn_tutorial execute notebooks/*.ipynb solutions/*.ipynb

clean-venv:
	rm -rf $(VENV)
