"""The streaming (non-temporal) stores under ``kernel(..., depths=...)``: ``cpu.store_strip``.

Truth: NumPy slice assignment of the same strip (and its transpose for the mirror image).  The
stores write 64-byte lines as vectors (row segments) and as register-transposed blocks (mirror
images), element by element where lines are partial, so every alignment, strip height and width
around one line is tried, and a kernel large enough for the block path is compared with the
separate calls bit for bit.
"""

import dataclasses
import itertools
import re

import numba
import numpy as np
import pytest

import ntkfast as nf
from ntkfast._jit import JIT_OPTIONS
from ntkfast.backends import cpu


def aligned_stack(dtype, shape, shift):
    """A C-contiguous array of ``shape`` starting ``shift`` elements after a 64-byte boundary."""
    size = int(np.prod(shape))
    raw = np.zeros(size + 64, dtype)
    start = (-raw.ctypes.data % 64) // raw.itemsize + shift
    return raw[start:start + size].reshape(shape)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("stream", [True, False])
def test_store_strip_equals_numpy_assignment(rng, dtype, stream):
    line = 64 // np.dtype(dtype).itemsize
    heights = (1, line - 1, line, line + 3, 2 * line, 3 * line + 2)
    widths = (1, line, 2 * line + 5, 70)
    for shift, rows, cols, i0, j0, mirror in itertools.product((0, 1, 3), heights, widths, (0, 5, 2 * line),
                                                               (0, 70 + line, 150), (False, True)):  # fmt: skip
        if mirror and not (i0 + rows <= j0 or j0 + cols <= i0):
            continue  # a strip and its mirror image never overlap (tiles above the diagonal)
        out = aligned_stack(dtype, (2, 256, 256), shift)
        strip = rng.standard_normal((2, rows, cols)).astype(dtype)
        expected = np.zeros_like(out)
        expected[:, i0:i0 + rows, j0:j0 + cols] = strip
        if mirror:
            expected[:, j0:j0 + cols, i0:i0 + rows] = strip.transpose(0, 2, 1)
        cpu.store_strip(out, strip, i0, j0, mirror, stream)
        np.testing.assert_array_equal(out, expected, err_msg=f"{shift=} {rows=} {cols=} {i0=} {j0=} {mirror=}")


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("view", ["every_other_column", "rows_reversed", "columns_reversed", "slices_reversed"])
def test_store_strip_into_strided_and_reversed_outputs(rng, dtype, view):
    """Outputs whose rows are not contiguous (every other column of a wider array) or that run
    backwards along an axis: addressed by their strides, the same values, nothing else touched."""
    line = 64 // np.dtype(dtype).itemsize
    strip = rng.standard_normal((2, 2 * line, 40)).astype(dtype)
    wide = np.zeros((2, 128, 256), dtype)
    out = {"every_other_column": wide[:, :, ::2], "rows_reversed": wide[:, ::-1, :128],
           "columns_reversed": wide[:, :, 127::-1], "slices_reversed": wide[::-1, :, :128]}[view]  # fmt: skip
    expected = np.zeros_like(out)
    expected[:, 0:2 * line, 64:104] = strip
    expected[:, 64:104, 0:2 * line] = strip.transpose(0, 2, 1)
    cpu.store_strip(out, strip, 0, 64, True, True)
    np.testing.assert_array_equal(out, expected)
    out[...] = 0
    assert not wide.any()  # nothing outside ``out`` was written


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_streaming_stores_are_vector_stores(dtype):
    """The compiled streaming path stores whole lines with vector non-temporal stores
    (movntps/movntpd/movntdq on an xmm, ymm or zmm register), not one scalar store per element.  Compiled
    afresh here: Numba does not show the assembly of cached code."""
    fresh = numba.njit(**{**JIT_OPTIONS, "cache": False})(cpu.store_strip.py_func)
    out = np.zeros((1, 64, 64), dtype)
    fresh(out, np.ones((1, 16, 16), dtype), 0, 32, True, True)
    asm = "\n".join(fresh.inspect_asm().values())
    assert re.search(r"\bv?movnt(p[sd]|dq)\s+%[xyz]mm", asm)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_kernel_with_register_transposed_mirror_images(rng, monkeypatch, dtype):
    """Tiles of whole lines (tile 32) over outputs of whole lines, streaming forced: the mirror
    images go through the transposed blocks; the values are the separate calls', exactly
    symmetric."""
    from ntkfast import config

    monkeypatch.setattr(config, "STREAM_MIN_BYTES", 0)
    arch = nf.MLP(depth=3, activation="erf", W_std=1.4, b_std=0.1)
    X = rng.standard_normal((96, 5)).astype(dtype)
    X[70] = X[3] * (1 + 1e-5)  # a nearly parallel pair above the diagonal: recomputed, then mirrored
    for shift in (0, 1):  # outputs on a line boundary, and one element in (strips follow the phase)
        stacks = [aligned_stack(dtype, (3, 96, 96), shift) for _ in range(2)]
        out = tuple((stacks[0][k], stacks[1][k]) for k in range(3))
        got = nf.kernel(arch, X, get=("nngp", "ntk"), depths=(1, 2, 3), out=out, tile=32, n_jobs=2)
        for d, g in zip((1, 2, 3), got):
            for a, b in zip(g, nf.kernel(dataclasses.replace(arch, depth=d), X, get=("nngp", "ntk"), tile=32)):
                np.testing.assert_array_equal(a, b)
                np.testing.assert_array_equal(a, a.T)
