# One test command: `make test`. Everything else is a step of it or a convenience.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
export PATH := $(CURDIR)/$(VENV)/bin:$(PATH)

.PHONY: test venv fixtures lint typecheck pytest proto bench clean

test: venv fixtures lint typecheck pytest

venv: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml tests/fakehost/pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q -e '.[test]' -e tests/fakehost
	touch $@

fixtures: venv
	$(PY) -m gpu_cdi_fakehost build-lib
	bash tests/conformance/build.sh

lint: venv
	$(VENV)/bin/ruff check cdi nri_plugin device_plugin tests bench
	$(VENV)/bin/ruff format --check cdi nri_plugin device_plugin

typecheck: venv
	$(VENV)/bin/mypy cdi nri_plugin device_plugin

pytest: venv
	$(PY) -m pytest -q -ra $(PYTEST_ARGS)

proto: venv
	$(PY) -m nri_plugin.protocol.genproto
	$(PY) -m device_plugin.api.genproto

bench: venv
	for b in cdi_registry generate generate_in_container hook nri nri_gpu fakehost_build nvidia_ctk_parity device_plugin node; do $(PY) bench/$$b.py || exit 1; done

clean:
	rm -rf $(VENV) .cache .mypy_cache .ruff_cache .pytest_cache
