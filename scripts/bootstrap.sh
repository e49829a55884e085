#!/usr/bin/env bash
# Set up kerasnets on a fresh machine with Python 3.11: a virtualenv in .venv with the package
# (and, with --test, its test extras), plus the system packages the toolchain checks use
# (g++, the Arm cross-compiler, and QEMU's Arm system emulator that runs the Cortex-M firmware;
# with --test also Chromium and its driver, which open the run report), installed with apt-get
# when running as root.
set -euo pipefail
cd "$(dirname "$0")/.."
extras=""
[[ "${1:-}" == "--test" ]] && extras="[test]"

PYTHON=${PYTHON:-python3.11}
command -v "$PYTHON" >/dev/null || { echo "bootstrap: $PYTHON not found; install Python 3.11 or set PYTHON=" >&2; exit 1; }
[[ -x .venv/bin/python ]] || "$PYTHON" -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q -e ".${extras}"
if [[ -n "$extras" ]]; then
  # MediaPipe's image classifier is the tests' independent reader of the TFLite metadata kerasnets
  # writes. Its wheel pins an absl-py that TFMOT refuses, and the tests use only its Tasks C
  # library, so it goes in without its dependencies (OpenCV comes with the test extras).
  .venv/bin/python -m pip install -q --no-deps "mediapipe==1.2.3"
  # The Android Task Library (tflite-support 0.4.4) is the tests' check of the app models; it pins
  # protobuf < 4, which TensorFlow refuses, so it lives in a virtualenv of its own.
  [[ -x .venv-tflite-support/bin/python ]] || "$PYTHON" -m venv .venv-tflite-support
  .venv-tflite-support/bin/python -m pip install -q "tflite-support==0.4.4"
fi

need=()
command -v g++ >/dev/null || need+=(g++)
command -v arm-none-eabi-g++ >/dev/null || need+=(gcc-arm-none-eabi libnewlib-arm-none-eabi)
command -v qemu-system-arm >/dev/null || need+=(qemu-system-arm)
if [[ -n "$extras" ]]; then  # the report test opens report.html in headless Chromium (Selenium)
  command -v chromium >/dev/null || need+=(chromium)
  command -v chromedriver >/dev/null || need+=(chromium-driver)
fi
if [[ ${#need[@]} -gt 0 ]]; then
  if [[ $(id -u) -eq 0 ]] && command -v apt-get >/dev/null; then
    echo "bootstrap: installing ${need[*]} (apt-get)"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
  else
    echo "bootstrap: without ${need[*]} the C compile, firmware and browser checks are skipped; install them with apt-get" >&2
  fi
fi
