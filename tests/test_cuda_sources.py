"""The CUDA twin of ntkfast/recursion.py, checked without a GPU: every CUDA source compiles with
nvcc for sm_90 with warnings as errors (the GPU backend's kernels instantiated from its own name
expressions), NVRTC compiles the source the backend loads (where CuPy is installed), and
recursion.cuh compiled for the host agrees with the Python recursion on edge cases (rho = +-1
and just inside, zero variance, large norms)."""

import math
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from ntkfast import recursion, spec
from ntkfast.backends import gpu

CUDA_DIR = Path(spec.__file__).parent / "backends" / "cuda"
NVCC = shutil.which("nvcc")
pytestmark = pytest.mark.skipif(NVCC is None, reason="nvcc not found")

ACTIVATIONS = [
    spec.ReLU(), spec.LeakyReLU(0.2), spec.Abs(), spec.ABReLU(-0.3, 1.7), spec.Erf(), spec.Erf(1.3, 0.7, 0.2),
    spec.Gelu(), spec.Sin(), spec.Sin(0.8, 1.5, 0.3), spec.Cos(), spec.Rbf(0.5), spec.Sign(), spec.Exp(1.0, 0.5),
    spec.Gaussian(1.0, -1.0), *[spec.RectifiedMonomial(n) for n in range(6)], *[spec.Monomial(n) for n in range(6)],
]  # fmt: skip

HOST_HARNESS = r"""
#include <cstdio>
#include "recursion.cuh"
template <typename T> void run() {
  int code; double p0, p1, p2, sxx, syy, sxy;
  while (std::scanf("%d %lf %lf %lf %lf %lf %lf", &code, &p0, &p1, &p2, &sxx, &syy, &sxy) == 7) {
    auto d = ntkfast::dual<T>(code, T(p0), T(p1), T(p2), T(sxx), T(syy), T(sxy));
    auto g = ntkfast::dual_diag<T>(code, T(p0), T(p1), T(p2), T(sxx));
    std::printf("%.17g %.17g %.17g %.17g\n", (double)d.k, (double)d.kdot, (double)g.k, (double)g.kdot);
  }
}
int main(int argc, char** argv) { if (argc > 1 && argv[1][0] == 'f') run<float>(); else run<double>(); return 0; }
"""

DEVICE_PROBE = r"""
#include "recursion.cuh"
template <typename T>
__global__ void probe(const int* codes, const T* args, T* out, int n) {
  int i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i >= n) return;
  const T* a = args + 6 * i;
  auto d = ntkfast::dual<T>(codes[i], a[0], a[1], a[2], a[3], a[4], a[5]);
  auto g = ntkfast::dual_diag<T>(codes[i], a[0], a[1], a[2], a[3]);
  T s = a[5], t = a[5];
  ntkfast::step<T>(d.k, d.kdot, s, t, T(0), T(1), T(0), T(1), T(0));
  out[4 * i] = d.k; out[4 * i + 1] = d.kdot; out[4 * i + 2] = g.k + s; out[4 * i + 3] = g.kdot + t;
}
template __global__ void probe<float>(const int*, const float*, float*, int);
template __global__ void probe<double>(const int*, const double*, double*, int);
"""


def _cases():
    rows = []
    for act in ACTIVATIONS:
        for sxx, syy in ((1.0, 1.0), (0.3, 2.5), (1e4, 3e3)):
            s = math.sqrt(sxx * syy)
            for rho in (-1.0, -1 + 1e-9, -0.5, 0.0, 0.3, 1 - 1e-6, 1 - 1e-13, 1.0):
                if isinstance(act, spec.Gaussian) and max(sxx, syy) > 2:
                    continue
                if act.code == spec.EXP and max(sxx, syy) > 100:
                    continue
                rows.append((act.code, *act.params, sxx, syy, rho * s))
        rows.append((act.code, *act.params, 0.0, 0.0, 0.0))  # zero variance
        rows.append((act.code, *act.params, 0.0, 1.0, 0.0))
    return rows


@pytest.fixture(scope="module")
def host_binary(tmp_path_factory):
    d = tmp_path_factory.mktemp("cuda_host")
    src = d / "host_check.cu"
    src.write_text(HOST_HARNESS)
    exe = d / "host_check"
    res = subprocess.run([NVCC, "-x", "cu", "-Werror", "all-warnings", f"-I{CUDA_DIR}", "-o", str(exe), str(src)],
                         capture_output=True, text=True)  # fmt: skip
    assert res.returncode == 0, res.stderr
    return exe


def _run(exe, rows, single):
    text = "\n".join(" ".join(repr(float(v)) if i else str(int(v)) for i, v in enumerate(r)) for r in rows)
    res = subprocess.run([str(exe), "f" if single else "d"], input=text, capture_output=True, text=True, check=True)
    return np.array([[float(v) for v in line.split()] for line in res.stdout.strip().splitlines()])


@pytest.mark.parametrize("single", [False, True], ids=["float64", "float32"])
def test_host_compiled_header_matches_python(host_binary, single):
    rows = _cases()
    got = _run(host_binary, rows, single)
    cast = np.float32 if single else float
    ref = []
    for code, p0, p1, p2, sxx, syy, sxy in rows:
        args = [cast(v) for v in (p0, p1, p2)]
        ref.append(
            [
                *recursion.dual(code, *args, cast(sxx), cast(syy), cast(sxy)),
                *recursion.dual_diag(code, *args, cast(sxx)),
            ]
        )
    ref = np.array(ref, dtype=np.float64)
    # scale of each row: its largest value (the diagonal's size, the Cauchy-Schwarz bound); near
    # rho = -1 K itself is a cancellation far below that scale
    scale = np.maximum(np.abs(ref).max(axis=1, keepdims=True), 1e-300)
    # float64: libm's atan2/exp/expm1 vs ours differ in the last bits; float32: rounding of the
    # inputs near rho = +-1 moves theta by ~sqrt(eps)
    tol = 1e-12 if not single else 1e-3
    bad = np.abs(got - ref) > tol * scale
    assert not bad.any(), [(rows[i], got[i], ref[i]) for i in np.unique(np.nonzero(bad)[0])][:5]


def _compile_sm90(src: Path, tmp_path: Path):
    res = subprocess.run(
        [NVCC, "-arch=sm_90", "-std=c++17", "-Werror", "all-warnings", f"-I{CUDA_DIR}", "-c", str(src),
         "-o", str(tmp_path / (src.stem + ".o"))],
        capture_output=True, text=True,
    )  # fmt: skip
    assert res.returncode == 0, f"{src.name}:\n{res.stderr}"


def _instantiated_source(pairs) -> str:
    """The source the GPU backend hands NVRTC, with the kernels of its name expressions
    instantiated for nvcc (taking their addresses instantiates the templates)."""
    exprs = [e for code, dtype in pairs for e in gpu.name_expressions(code, dtype)]
    refs = ", ".join(f"(void*)&{e}" for e in dict.fromkeys(exprs))
    return gpu.load_source() + f"\nextern void* const ntkfast_kernels[];\nvoid* const ntkfast_kernels[] = {{{refs}}};\n"


def test_device_code_compiles_for_sm90(tmp_path):
    sources = sorted(CUDA_DIR.glob("*.cu")) + [tmp_path / "probe.cu", tmp_path / "kernels.cu"]
    (tmp_path / "probe.cu").write_text(DEVICE_PROBE)
    # every kernel of the backend, in both dtypes (one activation each: the code is a constant)
    (tmp_path / "kernels.cu").write_text(_instantiated_source([(spec.ABRELU, "float32"), (spec.ERF, "float64")]))
    for src in sources:
        _compile_sm90(src, tmp_path)


ALL_CODES = (
    list(range(spec.GAUSSIAN + 1))
    + [spec.RECTIFIED_MONOMIAL + n for n in range(spec.MAX_RECTIFIED_DEGREE + 1)]
    + [spec.MONOMIAL + n for n in range(spec.MAX_MONOMIAL_DEGREE + 1)]
)


@pytest.mark.slow
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_every_activation_instantiates_for_sm90(tmp_path, dtype):
    assert {a.code for a in ACTIVATIONS} <= set(ALL_CODES)
    (tmp_path / "all.cu").write_text(_instantiated_source([(code, dtype) for code in ALL_CODES]))
    _compile_sm90(tmp_path / "all.cu", tmp_path)


def test_nvrtc_compiles_the_backend_source():
    """What cupy.RawModule does at run time, short of loading the binary (which needs a device):
    NVRTC compiles the inlined source with the backend's options and finds every name expression."""
    try:
        from cupy.cuda import nvrtc

        nvrtc.getVersion()
    except Exception as exc:  # no CuPy, or no NVRTC library
        pytest.skip(f"CuPy's NVRTC is not available ({exc})")
    exprs = gpu.name_expressions(spec.ABRELU, "float64")
    prog = nvrtc.createProgram(gpu.load_source(), "gram.cu", (), ())
    try:
        for e in exprs:
            nvrtc.addNameExpression(prog, e)
        # the options CuPy adds to ours (cupy/cuda/compiler.py)
        options = gpu.NVRTC_OPTIONS + ("-arch=sm_90", "--device-as-default-execution-space", "-ftz=true")
        try:
            nvrtc.compileProgram(prog, options)
        except nvrtc.NVRTCError:
            pytest.fail(nvrtc.getProgramLog(prog))
        lowered = [nvrtc.getLoweredName(prog, e) for e in exprs]
        assert all(name.startswith("_ZN7ntkfast") for name in lowered)
    finally:
        nvrtc.destroyProgram(prog)


def test_codes_match_python():
    header = (CUDA_DIR / "recursion.cuh").read_text()
    for name in ("ABRELU", "ERF", "GELU", "SIN", "SIGN", "EXP", "GAUSSIAN", "RECTIFIED_MONOMIAL", "MONOMIAL"):
        assert f"{name} = {getattr(spec, name)}" in header
    tol64 = float(header.split("parallel_tol<double>() { return ")[1].split(";")[0])
    tol32 = float(header.split("parallel_tol<float>() { return ")[1].split("f;")[0])
    assert (tol64, tol32) == (recursion._PARALLEL_TOL64, recursion._PARALLEL_TOL32)


def test_series_kernels_compile_for_sm90(tmp_path):
    """The Hermite-series kernels (code SERIES: every kernel of the module, both dtypes) compile
    for sm_90 with warnings as errors."""
    (tmp_path / "series.cu").write_text(_instantiated_source([(spec.SERIES, "float32"), (spec.SERIES, "float64")]))
    _compile_sm90(tmp_path / "series.cu", tmp_path)
