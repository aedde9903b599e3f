#!/usr/bin/env bash
# Install PyTorch before anything that depends on it.
#  - With an NVIDIA GPU (nvidia-smi works): the regular build from PyPI (CUDA).
#  - Without one: the CPU build only (`torch==X+cpu`), never the multi-GB CUDA packages.
#    pip finds it in a configured local wheel folder/index, else in PyTorch's CPU index.
# Override with TORCH_SPEC (e.g. TORCH_SPEC="torch==2.5.1") to choose the build yourself.
set -euo pipefail
PIP=${PIP:-python -m pip}
TORCH_VERSION=${TORCH_VERSION:-2.13.0}

if $PIP show torch >/dev/null 2>&1; then
  echo "torch already installed: $($PIP show torch | awk '/^Version/{print $2}')"
  exit 0
fi
if [ -n "${TORCH_SPEC:-}" ]; then
  $PIP install --quiet "$TORCH_SPEC"
elif command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then
  echo "NVIDIA GPU found: installing the CUDA build of torch==$TORCH_VERSION"
  $PIP install --quiet "torch==$TORCH_VERSION"
else
  echo "No NVIDIA GPU: installing the CPU build of torch==$TORCH_VERSION"
  $PIP install --quiet "torch==$TORCH_VERSION+cpu" 2>/dev/null \
    || $PIP install --quiet "torch==$TORCH_VERSION+cpu" --extra-index-url https://download.pytorch.org/whl/cpu
fi
