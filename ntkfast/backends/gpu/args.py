"""The kernels' parameter lists and the packing of launch arguments to their exact C types."""

from __future__ import annotations

import numpy as np

# C parameter lists of the kernels of gram.cu, in order ("T" is the template's float type).
# tests/test_gpu.py parses gram.cu and checks that these agree with it, and the host emulation
# of the kernels (tests/cuda_emu) checks each scalar's width against the compiled signature.
_RECURSION = (
    ("coef", "const T*"), ("n_steps", "int"), ("sig_x", "const T*"), ("sig_y", "const T*"), ("ld_sx", "int"),
    ("ld_sy", "int"), ("diag_nngp", "const T*"), ("diag_ntk", "const T*"), ("diagonal", "int"), ("refine", "int"),
    ("tau", "float"), ("coef64", "const double*"), ("sig_x64", "const double*"), ("sig_y64", "const double*"),
    ("x64", "const double*"), ("y64", "const double*"), ("d", "int"),
    # Hermite-series activations (null / 0 for the closed forms): degree table, per-row coefficients
    ("table", "const int*"), ("n_bins", "int"), ("rho_steps", "int"), ("n_coef", "int"), ("cx", "const T*"),
    ("dx", "const T*"), ("inv_x", "const T*"), ("cy", "const T*"), ("dy", "const T*"), ("inv_y", "const T*"),
    # ELU/SELU's closed form beyond the series (series.exact_args): per-layer cut, [flag, alpha, scale, vmin, vmax]
    ("cut", "const T*"), ("exact", "const double*"),
)  # fmt: skip
_OUTPUTS = (
    ("nngp", "T*"), ("ntk", "T*"), ("ld_out", "long long"), ("nngp_t", "T*"), ("ntk_t", "T*"), ("ld_t", "long long"),
)  # fmt: skip
PARAMS = {
    "recursion_tile": (("gram", "const T*"), ("ld_gram", "long long"), ("n", "int"), ("m", "int"))
    + _RECURSION
    + _OUTPUTS,
    "gram_fused": (("X", "const T*"), ("Y", "const T*"), ("n", "int"), ("m", "int")) + _RECURSION + _OUTPUTS,
    "matvec_fused": (("X", "const T*"), ("Y", "const T*"), ("n", "int"), ("m", "int"))
    + _RECURSION
    + (("want_ntk", "int"), ("V", "const T*"), ("k", "int"), ("tiles_per_slice", "int"), ("partial", "T*")),
    "sum_slices": (("partial", "const T*"), ("n_slices", "int"), ("size", "long long"), ("out", "T*")),
}
NULL = np.uint64(0)  # a null device pointer, passed by value
SCALARS = {"int": np.int32, "long long": np.int64, "float": np.float32, "double": np.float64}


def pack_args(kernel: str, dtype, values: dict) -> tuple:
    """The argument tuple of ``kernel`` from ``values`` (by parameter name), each scalar cast to
    its exact C type: CuPy would pass a Python int as 64 bits, which misaligns an ``int``.
    Pointers are device arrays (or views; the pointer is the view's first element) or None."""
    dtype = np.dtype(dtype)
    params = PARAMS[kernel]
    missing = {p for p, _ in params} ^ set(values)
    if missing:
        raise KeyError(f"{kernel}: arguments {sorted(missing)} missing or unknown")
    args = []
    for name, ctype in params:
        v = values[name]
        if ctype.endswith("*"):
            want = np.dtype(np.float64) if "double" in ctype else np.dtype(np.int32) if "int" in ctype else dtype
            if v is None:
                args.append(NULL)
                continue
            if np.dtype(v.dtype) != want:
                raise TypeError(f"{kernel}.{name}: expected a {want} array, got {v.dtype}")
            args.append(v)
        else:
            scalar = dtype.type if ctype == "T" else SCALARS[ctype]
            if ctype in ("int", "long long"):
                info = np.iinfo(scalar)
                if not info.min <= int(v) <= info.max:
                    raise OverflowError(f"{kernel}.{name}={v} does not fit a C {ctype}")
            args.append(scalar(v))
    return tuple(args)


def ld(view) -> int:
    """Leading dimension (elements) of a 2-D view with unit column stride."""
    item = view.dtype.itemsize
    if view.ndim != 2 or (view.shape[1] > 1 and view.strides[1] != item) or view.strides[0] % item:
        raise ValueError(f"expected a row-major 2-D view with unit column stride, got strides {view.strides}")
    return max(view.strides[0] // item, 1)


def pack_coefficients(coef, dtype) -> np.ndarray:
    """[p0, p1, p2, w, b, alpha, beta, steps...] as gram.cu reads them (``coef``: engine.Coefficients)."""
    return np.concatenate([coef.params, coef.first, coef.steps.reshape(-1)]).astype(dtype)
