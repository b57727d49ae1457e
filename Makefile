# Two commands for a newcomer: `make demo` and `make test` (see README.md).
SHELL := /bin/bash
.DEFAULT_GOAL := help
PYTHON ?= python3
VENV := .venv
BIN := $(CURDIR)/$(VENV)/bin
LINK := .collections/ansible_collections/datarobot_mlops/management_agent
# kubernetes.core that drives helm 4, ahead of the `ansible` package's (tests/rig/kubernetes-core.env)
KCORE := .collections/ansible_collections/kubernetes/core/MANIFEST.json
RIG := $(BIN)/python tests/rig/rig.py
PYTEST := $(BIN)/pytest -ra
export ANSIBLE_CONFIG := $(CURDIR)/ansible.cfg
export PATH := $(BIN):$(PATH)

.PHONY: help system-packages rig-binaries setup test unit lint sanity ansible-lint packaging integration molecule docs reliability-report demo bench bench-fleet rig-up rig-down rig-status clean

help:
	@echo "make demo      bring up the local rig and run site.yml against it"
	@echo "make docs      the collection's module and role pages (antsibull-docs) in docs/build/"
	@echo "make reliability-report  the reliability suite and its table"
	@echo "make test      every suite: unit, lint + sanity, packaging, ansible-core 2.16, integration and Molecule on the rig"
	@echo "make setup     .venv with the pinned tool chain; links the checkout as the collection"
	@echo "make system-packages  the Debian packages the rig needs (installs them as root, else names the command)"
	@echo "make bench-fleet  a fleet push to 1, 2 and 4 registries: wall times and their ratio"
	@echo "make rig-up | rig-down | rig-status   the local rig of real parts (tests/rig)"

# Debian packages first (tests/rig/system-packages.sh: dpkg-query only when all are there), before any build.
system-packages:
	@PYTHON=$(PYTHON) VENV=$(VENV) bash tests/rig/system-packages.sh

setup: system-packages $(VENV)/.installed $(LINK) $(KCORE)

$(VENV)/.installed: requirements.txt requirements-test.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -r requirements-test.txt
	touch $@

$(LINK):
	mkdir -p $(dir $@)
	ln -sfn ../../.. $@

$(KCORE): tests/rig/kubernetes-core.env $(VENV)/.installed
	bash tests/rig/kubernetes-core.sh
	touch $@

test: system-packages setup rig-binaries unit lint packaging compat integration molecule

unit: system-packages setup rig-binaries
	$(PYTEST) tests/unit

lint: ansible-lint sanity

ansible-lint: setup
	$(BIN)/ansible-lint --profile production

sanity: setup
	bash tests/sanity/run.sh

# The oldest supported ansible-core line (meta/runtime.yml), 2.16, in its own virtualenv with the collections of
# an older `ansible` package that accept it (tests/compat/): unit tests, ansible-test sanity and one site.yml run
# on the rig. The newest line is .venv's, covered by unit, sanity and integration.
COMPAT_VENV := .cache/venv-core216
.PHONY: compat
compat: setup rig-up $(COMPAT_VENV)/.installed
	$(COMPAT_VENV)/bin/pytest -ra tests/unit
	bash tests/sanity/run.sh --venv $(COMPAT_VENV)
	COMPAT_VENV=$(CURDIR)/$(COMPAT_VENV) $(PYTEST) tests/compat

$(COMPAT_VENV)/.installed: tests/compat/requirements-core216.txt tests/compat/collections-core216.txt requirements.txt
	rm -rf $(COMPAT_VENV) && $(PYTHON) -m venv $(COMPAT_VENV)
	$(COMPAT_VENV)/bin/pip install --quiet -r tests/compat/requirements-core216.txt
	$(COMPAT_VENV)/bin/pip install --quiet --no-deps -r tests/compat/collections-core216.txt
	touch $@

packaging: setup rig-up
	$(PYTEST) tests/packaging

# pytest-xdist workers, each with its own rig: gw0 the checkout's (.rig), gwN .rig-gwN (tests/integration/conftest.py),
# started by the worker's first test. Whole files per worker, longest first. INTEGRATION_WORKERS=0: one process.
INTEGRATION_WORKERS ?= 2
XDIST = -n $(INTEGRATION_WORKERS) --dist loadfile --no-loadscope-reorder
integration: setup rig-up
	$(PYTEST) $(XDIST) tests/integration
	$(BIN)/python tests/reliability_report.py

# Molecule scenarios (extensions/molecule: default, openshift, check) on the rig, delegated driver.
molecule: setup rig-up
	source .rig/env && PATH=$(BIN):$$PATH $(BIN)/molecule test --all

# The collection's module and role pages as RST (antsibull-docs), into docs/build/.
docs: setup
	rm -rf docs/build && mkdir -p docs/build
	PATH=$(BIN):$$PATH $(BIN)/antsibull-docs collection --use-current --fail-on-error --dest-dir docs/build \
	  datarobot_mlops.management_agent
	@echo "docs/build/collections/datarobot_mlops/management_agent/index.rst"

# The reliability suite alone (part of `make integration` too), then its table.
reliability-report: setup rig-up
	$(PYTEST) $(XDIST) tests/integration/reliability; $(BIN)/python tests/reliability_report.py

# The rig's Go binaries, once (cached under ~/.cache/datarobot-mlops-rig; cold ~9 min on 2 cores).
rig-binaries: system-packages setup
	bash tests/rig/build-binaries.sh

rig-up: system-packages setup rig-binaries
	$(RIG) up $(if $(RIG_FLAVOUR),--flavour $(RIG_FLAVOUR))

# Every rig of this checkout: the one in RIG_DIR (.rig by default) and the integration workers' beside it (.rig-gwN).
RIG_BASE = $${RIG_DIR:-$(CURDIR)/.rig}
rig-down:
	@if [ -x $(BIN)/python ]; then status=0; base=$(RIG_BASE); \
	  for dir in "$$base" "$$base"-gw*; do \
	    if [ "$$dir" = "$$base" ] || [ -d "$$dir" ]; then RIG_DIR="$$dir" $(RIG) down || status=1; fi; \
	  done; exit $$status; \
	else echo "no .venv: nothing was started"; fi

rig-status: setup
	@status=0; base=$(RIG_BASE); for dir in "$$base" "$$base"-gw*; do \
	  if [ "$$dir" = "$$base" ] || [ -d "$$dir" ]; then echo "== $$dir"; RIG_DIR="$$dir" $(RIG) status || status=1; fi; \
	done; exit $$status

demo: system-packages setup rig-binaries rig-up
	source .rig/env && $(BIN)/python tests/rig/demo_archive.py "$$RIG_DIR/demo/datarobot-portable-prediction-api-9.2.0.tar.gz" \
	  && $(BIN)/python tests/fixtures/agent_tarball.py "$$RIG_DIR/demo" \
	  && $(BIN)/ansible-playbook site.yml -i inventories/local

bench: setup
	$(BIN)/python tests/bench/bench_pps.py

# A fleet push (one registry per cluster) with 1, 2 and 4 registries: wall times and their ratio.
bench-fleet: setup
	$(BIN)/python tests/bench/bench_fleet.py $(BENCH_FLEET_ARGS)

clean: rig-down
	rm -rf .collections tests/output .pytest_cache
