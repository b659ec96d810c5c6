# Deep image hashing: a reproducible study.  `make help` lists the targets.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
BIN := $(abspath $(VENV))/bin
STAMP := $(VENV)/.installed
PROFILE ?= quick
JOBS ?= 2
# where the datasets are; the library reads the same variable (default: data/)
export HASHSTUDY_DATA ?= $(CURDIR)/data
export PATH := $(BIN):$(PATH)

.PHONY: help venv test test-fast reports notebook benchmark benchmark-search benchmark-c2f benchmark-encoding benchmark-simplenet clean-smoke

help:  ## list the targets
	@grep -E '^[a-z0-9-]+:.*## ' $(MAKEFILE_LIST) | sed -E 's/:.*## /\t/' | expand -t 18

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --upgrade --quiet pip
	$(BIN)/pip install --quiet torch==2.14.1 torchvision==0.29.1
	$(BIN)/pip install --quiet -e '.[dev]'
	@touch $@

venv: $(STAMP)  ## create .venv and install everything (torch 2.14.1, the library, test tools)

test: $(STAMP)  ## run the library tests and every notebook at profile=smoke (what CI runs)
	$(BIN)/python -m hashstudy.smoke prepare build/smoke
	HASHSTUDY_DATA=$(CURDIR)/build/smoke/data HASHSTUDY_CACHE=$(CURDIR)/build/smoke/cache \
	  HASHSTUDY_REPORTS=$(CURDIR)/build/smoke/reports HASHSTUDY_DOWNLOAD=0 \
	  $(BIN)/python -m pytest tests build/smoke/notebooks --nbval-lax --nbval-current-env -p no:cacheprovider

test-fast: $(STAMP)  ## library tests only, no notebooks
	$(BIN)/python -m pytest tests -p no:cacheprovider

reports: $(STAMP)  ## run every notebook at PROFILE (default quick) and rebuild the summary
	$(BIN)/python -m hashstudy.regenerate --profile $(PROFILE) --jobs $(JOBS)

benchmark: $(STAMP)  ## time mAP@1000 on 10,000 x 50,000 64-bit codes against a reference loop and faiss
	$(BIN)/python benchmarks/hamming_map.py

benchmark-search: $(STAMP)  ## time exact and MIH Hamming search (top-10, top-1000, radius 2) over 0.1M, 1M, 10M 64-bit codes
	$(BIN)/python benchmarks/search_scale.py

benchmark-c2f: $(STAMP)  ## time the latent-layer coarse-to-fine search against an exhaustive F7 scan (CIFAR-10, 1M synthetic; k=10, 1000)
	$(BIN)/python benchmarks/coarse_to_fine.py

benchmark-encoding: $(STAMP)  ## time encoding a new image: SimpleNet (DSTH journal) against EfficientNet-Lite0
	$(BIN)/python benchmarks/encoding.py

benchmark-simplenet: $(STAMP)  ## time one SGD step of the journal DSTH's hash network on 1 thread and on all cores
	$(BIN)/python benchmarks/simplenet_step.py

.PHONY: sweep
sweep: $(STAMP)  ## a parameter sweep on Dask, e.g. make sweep ARGS='04_ddh --grid k1=5,15 --seeds 0,1,2'
	$(BIN)/python -m hashstudy.sweep $(ARGS)

clean-smoke:  ## remove smoke-test outputs
	rm -rf build/smoke reports/*/smoke
