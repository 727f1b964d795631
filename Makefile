# Two commands set everything up on a fresh machine with Python 3.11 and pip:
#   make demo   - run the main job on the embedded default
#   make test   - run the test suite (CI runs it, then `make typecheck`: mypy over the four packages)
PYTHON ?= python3
VENV   ?= .venv
BIN     = $(VENV)/bin
EXTRAS ?= onnx,demo,test,bench,torch,typecheck

.PHONY: demo test typecheck bench venv clean

$(BIN)/.installed: pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -c constraints.txt -e ".[$(EXTRAS)]"
	touch $@

venv: $(BIN)/.installed

demo: venv
	$(BIN)/corral demo --out demo-output

test: venv
	$(BIN)/python -m pytest $(PYTEST_ARGS)

typecheck: venv
	$(BIN)/mypy

bench: venv
	$(BIN)/python bench/engine.py

clean:
	rm -rf $(VENV) demo-output
