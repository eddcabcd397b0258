# The two quickstart commands: `make demo` and `make test`.
#
# Both install into a project-local virtual environment (.venv, created with $(PYTHON) on first
# use) or, when one is active (VIRTUAL_ENV is set), into that one: never into the global
# site-packages. Any Python >= 3.10 works, Debian's system python3 included (it needs the
# python3-venv package to create .venv).
PYTHON ?= python3
VENV := $(if $(VIRTUAL_ENV),$(VIRTUAL_ENV),.venv)
PY := $(VENV)/bin/python
PIP_FLAGS ?= --quiet --disable-pip-version-check
# Console scripts (alternator-shm, gunicorn, celery, ...) come from the venv too.
export PATH := $(abspath $(VENV))/bin:$(PATH)

.PHONY: venv install install-demo demo test lint wheel clean

venv:
ifndef VIRTUAL_ENV
	@if [ ! -x $(VENV)/bin/pip ]; then \
	    $(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 10))' 2>/dev/null \
	        || { echo "make: $(PYTHON) must be Python >= 3.10 (try PYTHON=python3.12)" >&2; exit 1; }; \
	    echo "creating $(VENV) with $$($(PYTHON) --version)"; \
	    rm -rf $(VENV); \
	    $(PYTHON) -m venv $(VENV) >/dev/null 2>&1 || { rm -rf $(VENV); \
	        echo "make: '$(PYTHON) -m venv' failed; on Debian/Ubuntu: apt-get install python3-venv" >&2; \
	        exit 1; }; \
	fi
ifneq ($(filter command line environment,$(origin PYTHON)),)
	@want=$$($(PYTHON) -c 'import platform; print(platform.python_version())'); \
	have=$$($(VENV)/bin/python -c 'import platform; print(platform.python_version())'); \
	if [ "$$want" != "$$have" ]; then \
	    echo "make: $(VENV) runs Python $$have, not $(PYTHON) ($$want): 'make clean' first" >&2; \
	    exit 1; \
	fi
endif
endif

install: venv
	$(PY) -m pip install $(PIP_FLAGS) -e '.[test,lint]'

install-demo: venv
	$(PY) -m pip install $(PIP_FLAGS) -e '.[emulator]'

demo: install-demo
	$(PY) -m alternator_shm demo

test: install
	$(PY) -m pytest -n auto -p no:cacheprovider
	$(PY) -m ruff check alternator_shm tests scripts
	$(PY) -m mypy

lint: install
	$(PY) -m ruff check alternator_shm tests scripts
	$(PY) -m mypy

# A manylinux wheel of this interpreter's CPython version with both C extensions built in
# (wheelhouse/); needs a C compiler here, none where it is installed.
wheel: venv
	$(PY) -m pip install $(PIP_FLAGS) '.[release]' >/dev/null
	rm -rf dist wheelhouse
	$(PY) -m pip wheel $(PIP_FLAGS) --no-deps --no-build-isolation -w dist .
	$(PY) -m auditwheel repair -w wheelhouse dist/*.whl

clean:
	rm -rf .venv build dist wheelhouse *.egg-info
