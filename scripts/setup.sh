#!/usr/bin/env bash
# Create .venv with torch 2.13.0 and the package (runtime + training + tests + tflite runtime).
# Where pip would fetch a CUDA build of torch, install the CPU build first (README, Install).
set -euo pipefail
cd "$(dirname "$0")/.."
if [ ! -x .venv/bin/python ]; then
  python3 -m venv .venv
fi
. .venv/bin/activate
python -m pip install -q --upgrade pip
# torch first, pinned, so no requirement pulls a (multi-GB CUDA) newer build.
python -m pip install -q "torch==2.13.0"
python -m pip install -q -e ".[train,test,tflite]"
