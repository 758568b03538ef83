# Two entry points: `make demo` and `make test`. Each does the whole set-up first.
SHELL := /bin/bash
PY := .venv/bin/python
PIP := .venv/bin/pip
APT_PACKAGES := espeak-ng flite festival festvox-kallpc16k festvox-us-slt-hts sox libsndfile1
OPTIONAL_APT := mbrola mbrola-us1 mbrola-us2 mbrola-us3 mbrola-en1

.PHONY: setup system-deps demo test lint corpus train bundle clean

setup: .venv/.setup-stamp

# Debian packages: installed only when missing; optional voices (contrib/non-free) never fail the build.
system-deps:
	@missing=""; for p in $(APT_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  echo "installing Debian packages:$$missing"; \
	  SUDO=""; [ "$$(id -u)" = 0 ] || SUDO=sudo; \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq $$missing >/dev/null; \
	  for p in $(OPTIONAL_APT); do DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq $$p >/dev/null 2>&1 || true; done; \
	fi

.venv/.setup-stamp: pyproject.toml | system-deps
	python3 -m venv .venv
	$(PIP) install -q --upgrade pip
	$(PIP) install -q torch==2.13.0
	$(PIP) install -q -e '.[dev]'
	touch $@

# The device runtime package (ONNX fp32 + int8) of the bundled model, exported when it changes.
RUNTIME := models/edgeasr-small-en/onnx/runtime.json
$(RUNTIME): models/edgeasr-small-en/model.safetensors models/edgeasr-small-en/manifest.json | setup
	.venv/bin/edgeasr export

demo: system-deps setup $(RUNTIME)
	.venv/bin/edgeasr transcribe samples/*.wav --refs samples/references.tsv
	.venv/bin/edgeasr stream samples/*.wav --context samples/context.txt --int8

test: system-deps setup
	$(PY) -m pytest -x

lint: setup
	.venv/bin/ruff check src tests benchmarks scripts
	.venv/bin/ruff format --check src tests benchmarks scripts

# The recipe of the bundled model (see models/edgeasr-small-en/README.md).
corpus: setup
	$(PY) -m edgeasr.cli corpus synth --out data/corpus --hours 10 --seed 1

train: setup
	$(PY) -m edgeasr.cli train --config configs/small.yaml --corpus data/corpus --out runs/small

clean:
	rm -rf .venv runs data
