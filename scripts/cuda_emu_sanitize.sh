#!/usr/bin/env bash
# Run the emulated CUDA kernels (tests/cuda_emu) under a sanitizer, on small ragged inputs:
#   scripts/cuda_emu_sanitize.sh address   # AddressSanitizer: out-of-bounds and use-after-free in the kernels
#   scripts/cuda_emu_sanitize.sh thread    # ThreadSanitizer: data races between the threads of a block
# The modules are rebuilt with -fsanitize=... (cached under tests/cuda_emu/.build/) and the sanitizer's
# runtime is preloaded into Python (which is not instrumented: only the kernels' accesses are checked),
# with libstdc++ (so that the sanitizer's interceptors of C++ exceptions find it: the emulator throws to
# unwind a block stopped at a barrier mismatch).
# Extra arguments go to pytest.  Exit status: pytest's (a sanitizer report fails the run).
set -euo pipefail
kind="${1:-address}"
shift || true
cd "$(dirname "$0")/.."
CXX="${NTK_EMU_CXX:-/usr/bin/g++}"
case "$kind" in
  address) lib="$("$CXX" -print-file-name=libasan.so)"
           export ASAN_OPTIONS="detect_leaks=0:abort_on_error=1:halt_on_error=1:${ASAN_OPTIONS:-}" ;;
  thread)  lib="$("$CXX" -print-file-name=libtsan.so)"
           export NTK_EMU_THREADS=concurrent  # the threads of a block at once: real races
           export TSAN_OPTIONS="halt_on_error=1:report_signal_unsafe=0:${TSAN_OPTIONS:-}" ;;
  *) echo "usage: $0 address|thread [pytest args]" >&2; exit 2 ;;
esac
export NTK_EMU_SANITIZE="$kind"
# one closed form of each family of kernels, both dtypes, both methods, K(X,X) and K(X,Y), matvec
select='cudaemu and (ab_relu0 or erf1 or monomial35 or emulator or order or written)'
LD_PRELOAD="$lib $("$CXX" -print-file-name=libstdc++.so)" PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" \
  python -m pytest tests/test_gpu.py -q -s -p no:cacheprovider -m cudaemu -k "$select" "$@"  # -s: a report stays visible
