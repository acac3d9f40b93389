# facerec: two commands set up a fresh machine.
#   make demo   - create .venv, install facerec, run the end-to-end demo on the embedded SQLite default
#   make test   - create .venv with test extras, run the test suite
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip --disable-pip-version-check -q
RUNTIME := $(VENV)/.facerec-runtime
TESTDEPS := $(VENV)/.facerec-test
PYTEST_ARGS ?= -m "not slow"

.PHONY: install demo test test-all lint clean

$(RUNTIME): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -e .
	# facenet-pytorch's metadata pins an old torch; its real needs are listed in pyproject.toml.
	$(PIP) install --no-deps facenet-pytorch==2.6.0
	touch $@

$(TESTDEPS): $(RUNTIME)
	$(PIP) install -e '.[test]'
	$(PIP) install --no-deps face_recognition==1.3.0
	touch $@

install: $(RUNTIME)

demo: $(RUNTIME)
	$(VENV)/bin/facerec demo

test: $(TESTDEPS)
	$(VENV)/bin/lint-imports
	$(PY) -m pytest $(PYTEST_ARGS)

test-all: PYTEST_ARGS =
test-all: test

clean:
	rm -rf $(VENV) build *.egg-info
