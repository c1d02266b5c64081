#!/usr/bin/env bash
# The GPU path at reference size, in one run of under 10 minutes on one CUDA GPU:
#   vLLM extraction at Qwen3-VL-2B size with dummy weights (clips/s, prompt tok/s, capture +
#   commit vs the plain engine, ratio to the card's prefill FLOP bound), V-JEPA2 ViT-L/16
#   encoding, and one reference-size training step. Writes one JSON.
#
#   benchmarks/gpu_check.sh [--out gpu_check.json] [--sections extract,encode,train] [--peak-tflops N]
#
# Python: $PYTHON when set, else `uv run --extra gpu python` (the CUDA build of the locked
# environment). Without a CUDA GPU it refuses (exit status 2) before measuring anything.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cd "$here/.."
if [[ -n "${PYTHON:-}" ]]; then
    py=("$PYTHON")
elif command -v uv >/dev/null 2>&1; then
    py=(uv run --extra gpu python)
else
    py=(python3)
fi
exec "${py[@]}" "$here/gpu_check.py" "$@"
