"""The CUDA source the GPU backend compiles: gram.cu with its headers (recursion.cuh, bivariate.cuh)
inlined, the template instances (name expressions) of one module, and the cache of compiled modules."""

from __future__ import annotations

import functools
import re
from pathlib import Path

import numpy as np

from ...errors import ArgumentTypeError
from .device import require

CUDA_DIR = Path(__file__).resolve().parent.parent / "cuda"
NVRTC_OPTIONS = ("-std=c++17",)
KERNELS = ("recursion_tile", "gram_fused", "matvec_fused")

_CTYPES = {np.dtype(np.float32): "float", np.dtype(np.float64): "double"}
HEADERS = ("recursion.cuh", "bivariate.cuh")  # what gram.cu includes, in its order
_INCLUDE = re.compile(r'^#include "(\w+\.cuh)"[ \t]*$', re.MULTILINE)
_PRAGMA_ONCE = re.compile(r"^#pragma once[ \t]*$", re.MULTILINE)


def ctype(dtype) -> str:
    """The C name of the kernels' float type for ``dtype`` (float32 -> float, float64 -> double)."""
    try:
        return _CTYPES[np.dtype(dtype)]
    except (KeyError, TypeError):
        raise ArgumentTypeError(f"dtype: the GPU kernels take float32 or float64, got {dtype!r}") from None


@functools.cache
def load_source() -> str:
    """gram.cu with its headers (``HEADERS``) inlined, ``#line`` directives pointing at each file.

    Inlining (rather than ``-I``) makes the headers part of the source text that CuPy's on-disk
    cache is keyed by, so editing the math recompiles the kernels.
    """
    main = CUDA_DIR / "gram.cu"
    text = main.read_text()
    found = list(_INCLUDE.finditer(text))
    if tuple(m.group(1) for m in found) != HEADERS:
        raise RuntimeError(f"{main} must #include {', '.join(HEADERS)} (in that order), and no other header")
    out = [f'#line 1 "{main}"\n']
    pos = 0
    for m in found:
        header = CUDA_DIR / m.group(1)
        line_after = text.count("\n", 0, m.end()) + 2
        # `#pragma once` is meaningless once inlined (and a warning in a main file); its line stays
        body = _PRAGMA_ONCE.sub("", header.read_text())
        out += [text[pos : m.start()], f'#line 1 "{header}"\n{body}\n#line {line_after} "{main}"']
        pos = m.end()
    out.append(text[pos:])
    return "".join(out)


def kernel_expression(kernel: str, code: int, dtype) -> str:
    """The name expression of one template instance, e.g. ``ntkfast::gram_fused<1, double>``."""
    ct = ctype(dtype)
    return f"ntkfast::{kernel}<{ct}>" if kernel == "sum_slices" else f"ntkfast::{kernel}<{int(code)}, {ct}>"


def name_expressions(code: int, dtype) -> list[str]:
    """The template instances one module holds: every kernel for one activation code and dtype."""
    return [kernel_expression(k, code, dtype) for k in (*KERNELS, "sum_slices")]


@functools.cache
def module(device_id: int, code: int, dtype_name: str):
    """The compiled module of ``code``/``dtype`` on one device (compiled at first use, cached)."""
    cupy = require()
    with cupy.cuda.Device(device_id):
        return cupy.RawModule(
            code=load_source(), options=NVRTC_OPTIONS, name_expressions=name_expressions(code, dtype_name)
        )


@functools.cache
def function(device_id: int, code: int, dtype_name: str, kernel: str):
    """One kernel of :func:`module`."""
    return module(device_id, code, dtype_name).get_function(kernel_expression(kernel, code, dtype_name))


def clear_cache() -> None:
    """Forget the compiled modules (for tests that swap the ``cupy`` module)."""
    module.cache_clear()
    function.cache_clear()
