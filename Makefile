# W2S denoising harness. `make help` lists the targets; variables go on the command line:
#   make train DATA=../shared/data/w2s-8bit EPOCHS=30 DEVICE=cpu
SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON   ?= python3
VENV     ?= .venv
BIN      := $(VENV)/bin
TORCH    ?= torch==2.13.0
DATA     ?=
CONFIG   ?= $(if $(DATA),,configs/demo.yaml)
EPOCHS   ?=
TASK     ?=
DEVICE   ?=
RESUME   ?=
ARGS     ?=
MODEL    ?=
SPLIT    ?=
SORT     ?=
EXPERIMENT ?=
TEST_ARGS ?=
MLFLOW_PORT ?= 5000
NPROC    ?=
BENCH_ARGS ?=
MINUTES  ?= 18
W2S_DATA  = $(or $(DATA),../shared/data/w2s-8bit)
CAREAMICS ?= careamics==0.3.5
CAREAMICS_VENV ?= .venv-careamics
CARE_PATCH ?= 128
CARE_BATCH ?= 8

TRAIN_FLAGS = $(if $(RESUME),,$(if $(CONFIG),--config $(CONFIG))) $(if $(TASK),--task $(TASK)) $(if $(DATA),--data $(DATA)) $(if $(EPOCHS),--epochs $(EPOCHS)) \
              $(if $(DEVICE),--device $(DEVICE)) $(if $(RESUME),--resume $(RESUME)) $(ARGS)

EVAL_FLAGS = --model $(or $(MODEL),runs/latest) $(if $(DATA),--data $(DATA)) $(if $(SPLIT),--split $(SPLIT)) $(ARGS)
COMPARE_FLAGS = $(if $(EXPERIMENT),--experiment $(EXPERIMENT)) $(if $(SORT),--sort $(SORT)) $(ARGS)

.PHONY: help install train train-w2s evaluate compare bench bench-careamics test test-fast mlflow-ui clean export-bmz

help: ## Show this help
	@grep -hE '^[a-zA-Z0-9_-]+:.*?## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*?## "}; {printf "  \033[36m%-15s\033[0m %s\n", $$1, $$2}'
	@echo "Variables: DATA=dir CONFIG=file TASK=denoise|n2v|jdsr EPOCHS=n DEVICE=auto|cpu|cuda RESUME=runs/latest NPROC=n"
	@echo "           ARGS='--lr 1e-3 ...'"
	@echo "           MODEL=checkpoint|run dir|runs:/ID/model|models:/w2s-unet@ALIAS SPLIT=test|val SORT=metric EXPERIMENT=name"

install: $(VENV)/.installed ## Create .venv with pinned torch and the project (idempotent)

$(VENV)/.installed: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet "$(TORCH)"
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	touch $@

train: install ## Train a U-Net (default: embedded synthetic demo data, ~2 min on CPU); NPROC=N: N-process DDP via torchrun
	$(if $(NPROC),$(BIN)/torchrun --standalone --nproc_per_node $(NPROC) -m w2s.cli,$(BIN)/w2s) train $(TRAIN_FLAGS)

train-w2s: install ## The W2S recipe (configs/w2s-8bit.yaml: train FOVs 001-070, validate 071-080) on DATA (default ../shared/data/w2s-8bit)
	$(BIN)/w2s train --config configs/w2s-8bit.yaml --data $(W2S_DATA) $(if $(DEVICE),--device $(DEVICE)) $(if $(RESUME),--resume $(RESUME)) $(ARGS)

evaluate: install ## Score the latest run's best model on its held-out split, with baselines (MODEL= DATA= SPLIT= ARGS=)
	$(BIN)/w2s evaluate $(EVAL_FLAGS)

compare: install ## List the runs of the experiment, best test_psnr first (SORT=metric EXPERIMENT=name ARGS=)
	$(BIN)/w2s runs $(COMPARE_FLAGS)

bench: install ## Benchmarks side by side: table + runs/bench/*.json (~15-20 min on 2 busy cores; BENCH_ARGS='--quick' | '--minutes 10' | '--only data')
	$(BIN)/python -m benchmarks $(BENCH_ARGS)

# Both sides train on CARE_BATCH x CARE_PATCH^2; the recipe is squeezed into MINUTES: 6 epochs of MINUTES x 29 steps (~23 patches/s of 8 x 128^2 here), capped by max_minutes
bench-careamics: install ## CAREamics' default CARE vs the W2S recipe, MINUTES=18 of training each, scored side by side (own venv .venv-careamics, ~5 GB)
	test -x $(CAREAMICS_VENV)/bin/python || $(PYTHON) -m venv $(CAREAMICS_VENV)
	$(CAREAMICS_VENV)/bin/python -m pip install --quiet "$(CAREAMICS)"
	PYTHONPATH=. $(CAREAMICS_VENV)/bin/python -m benchmarks.careamics_side_by_side --data $(W2S_DATA) \
	    --minutes $(MINUTES) --patch-size $(CARE_PATCH) --batch-size $(CARE_BATCH) --out runs/bench/careamics
	$(BIN)/w2s train --config configs/w2s-8bit.yaml --data $(W2S_DATA) --epochs 6 \
	    --steps-per-epoch $$(( $(MINUTES) * 29 )) --set max_minutes=$(MINUTES) --set patch_size=$(CARE_PATCH) --set batch_size=$(CARE_BATCH) --set registered_model= --run-name vs-careamics-$(MINUTES)min
	$(BIN)/w2s evaluate --model runs/latest --split val --baselines none -p careamics=runs/bench/careamics/predictions

test: install ## Run every test, slow ones included (what CI runs)
	$(BIN)/python -m pytest $(TEST_ARGS)

test-fast: install ## Run the fast tests only (skips those marked slow)
	$(BIN)/python -m pytest -m "not slow" $(TEST_ARGS)

mlflow-ui: install ## Serve the local tracking store (mlflow.db) on http://127.0.0.1:5000
	$(BIN)/mlflow ui --backend-store-uri sqlite:///mlflow.db --host 127.0.0.1 --port $(MLFLOW_PORT)

clean: ## Remove caches and the demo data (keeps runs/ and mlflow.db)
	rm -rf .pytest_cache data/demo-w2s build *.egg-info
	find . -name __pycache__ -prune -exec rm -rf {} +

export-bmz: install ## BioImage Model Zoo package of MODEL= to OUT= (default dist/w2s-bmz.zip), validated by its tools
	$(BIN)/w2s export-bmz --model "$(or $(MODEL),runs/latest)" --out "$(or $(OUT),dist/w2s-bmz.zip)" $(ARGS)

# ------------------------------------------------------------------------------ challenge container
# docker when a daemon answers, else podman + buildah (apt-get install podman buildah debootstrap).
IMAGE      ?= w2s-mdc24:latest
BASE_IMAGE ?=
TEST_INPUT ?= ../shared/data/challenge/input

.PHONY: docker-build docker-test docker-save docker-ci

docker-build: install ## Build the challenge image from MODEL=checkpoint|run dir|runs/latest|models:/w2s-unet@ALIAS
	$(BIN)/python -m submission.build --model "$(MODEL)" --image "$(IMAGE)" $(if $(BASE_IMAGE),--base-image "$(BASE_IMAGE)") $(ARGS)

docker-test: install ## Run the image as Grand Challenge does on TEST_INPUT + edge cases; check outputs, panimg
	$(BIN)/python -m submission.docker_test --image "$(IMAGE)" --real-inputs "$(TEST_INPUT)" $(ARGS)

docker-save: install ## Write dist/<name>_<date>.tar.gz of IMAGE for upload and print its size
	$(BIN)/python -m submission.save --image "$(IMAGE)" $(ARGS)

docker-ci: install ## CI: train a tiny demo model, docker-build it, docker-test it (times each step)
	$(BIN)/python -m submission.ci --real-inputs "$(TEST_INPUT)"
