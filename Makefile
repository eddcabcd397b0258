# The two quickstart commands: `make demo` and `make test`. Both install what they need first.
PYTHON ?= python3
PIP_FLAGS ?= --quiet --disable-pip-version-check

.PHONY: install demo test lint

install:
	$(PYTHON) -m pip install $(PIP_FLAGS) -e '.[test,lint]'

demo:
	$(PYTHON) -m pip install $(PIP_FLAGS) -e '.[emulator]'
	$(PYTHON) -m alternator_shm demo

test: install
	$(PYTHON) -m pytest -n auto -p no:cacheprovider
	$(PYTHON) -m ruff check alternator_shm tests scripts
	$(PYTHON) -m mypy

lint: install
	$(PYTHON) -m ruff check alternator_shm tests scripts
	$(PYTHON) -m mypy
