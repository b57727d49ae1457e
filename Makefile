# Two commands for a newcomer: `make demo` and `make test` (see README.md).
SHELL := /bin/bash
.DEFAULT_GOAL := help
PYTHON ?= python3
VENV := .venv
BIN := $(CURDIR)/$(VENV)/bin
LINK := .collections/ansible_collections/datarobot_mlops/management_agent
RIG := $(BIN)/python tests/rig/rig.py
PYTEST := $(BIN)/pytest -ra
export ANSIBLE_CONFIG := $(CURDIR)/ansible.cfg
export PATH := $(BIN):$(PATH)

.PHONY: help setup test unit lint sanity ansible-lint packaging integration molecule docs reliability-report demo bench rig-up rig-down rig-status clean

help:
	@echo "make demo      bring up the local rig and run site.yml against it"
	@echo "make docs      the collection's module and role pages (antsibull-docs) in docs/build/"
	@echo "make reliability-report  the reliability suite and its table"
	@echo "make test      every suite: unit, lint + sanity, packaging, integration on the rig"
	@echo "make setup     .venv with the pinned tool chain; links the checkout as the collection"
	@echo "make rig-up | rig-down | rig-status   the local rig of real parts (tests/rig)"

setup: $(VENV)/.installed $(LINK)

$(VENV)/.installed: requirements.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -r requirements.txt
	touch $@

$(LINK):
	mkdir -p $(dir $@)
	ln -sfn ../../.. $@

test: unit lint packaging integration molecule

unit: setup
	$(PYTEST) tests/unit

lint: ansible-lint sanity

ansible-lint: setup
	$(BIN)/ansible-lint --profile production

sanity: setup
	bash tests/sanity/run.sh

packaging: setup
	$(PYTEST) tests/packaging

integration: setup rig-up
	$(PYTEST) tests/integration
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
	$(PYTEST) tests/integration/reliability; $(BIN)/python tests/reliability_report.py

rig-up: setup
	$(RIG) up $(if $(RIG_FLAVOUR),--flavour $(RIG_FLAVOUR))

rig-down:
	@if [ -x $(BIN)/python ]; then $(RIG) down; else echo "no .venv: nothing was started"; fi

rig-status: setup
	$(RIG) status

demo: rig-up
	source .rig/env && $(BIN)/python tests/rig/demo_archive.py "$$RIG_DIR/demo/datarobot-portable-prediction-api-9.2.0.tar.gz" \
	  && $(BIN)/python tests/fixtures/agent_tarball.py "$$RIG_DIR/demo" \
	  && $(BIN)/ansible-playbook site.yml -i inventories/local

bench: setup
	$(BIN)/python tests/bench/bench_pps.py

clean: rig-down
	rm -rf .collections tests/output .pytest_cache
