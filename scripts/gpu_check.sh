#!/usr/bin/env bash
# Device check, for a machine with an NVIDIA GPU and CuPy (pip install ntkfast[gpu]):
#   scripts/gpu_check.sh            # GPU tests on real CuPy, then the benchmark ratios (a few minutes)
#   GPU_CHECK_N=20000 scripts/gpu_check.sh   # a smaller benchmark (default n = 50 000, d = 784, float32)
#   GPU_CHECK_BENCH=0 scripts/gpu_check.sh   # tests only
# Prints the device, runs tests/test_gpu.py and tests/test_cuda_series.py -m gpu (the real kernels: Gram for every
# activation code and both dtypes, matvec, empirical NTK, bitwise repeatability) and the NVRTC/nvcc checks
# of tests/test_cuda_sources.py, then asv_bench/benchmarks/bench_gpu.py's benchmark(): Gram vs cuBLAS
# X @ X.T, matvec vs the same GEMM floor, hand-tiled ("fused") vs cuBLAS + recursion ("gemm").
# Exit status: non-zero if a test failed (the benchmark still runs and prints).
set -uo pipefail
cd "$(dirname "$0")/.."
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
N="${GPU_CHECK_N:-50000}"
python - <<'PY' || { echo "gpu_check: no usable CuPy/CUDA device (pip install ntkfast[gpu])" >&2; exit 2; }
import cupy
from ntkfast.backends import gpu
cupy.cuda.runtime.getDeviceCount()
props = cupy.cuda.runtime.getDeviceProperties(0)
print("device:", props["name"].decode(), "| CUDA runtime", cupy.cuda.runtime.runtimeGetVersion(),
      "| CuPy", cupy.__version__, "| available:", gpu.available())
PY
status=0
timeout 900 python -m pytest tests/test_gpu.py tests/test_cuda_series.py -m gpu -q -p no:cacheprovider -x || status=1
timeout 600 python -m pytest tests/test_cuda_sources.py -q -p no:cacheprovider || status=1
if [ "${GPU_CHECK_BENCH:-1}" != "0" ]; then
  timeout 900 python - "$N" <<'PY' || status=1
import importlib.util, sys
spec = importlib.util.spec_from_file_location("bench_gpu", "asv_bench/benchmarks/bench_gpu.py")
bench = importlib.util.module_from_spec(spec)
spec.loader.exec_module(bench)
n = int(sys.argv[1])
print(f"benchmark: n = {n}, d = 784, float32, ReLU depth 3 (seconds; ratios are what to compare)")
bench.benchmark(n=n, d=784, dtype="float32")
PY
fi
exit $status
