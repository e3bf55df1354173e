"""CPU inner kernels (Numba): the fused per-tile recursion, the diagonal recursion, a mirror copy.

Tile kernels are serial and release the GIL: ``ntkfast.tiling.run_tiles`` runs tiles on a
thread pool, each thread doing its own single-threaded BLAS GEMM then the recursion (BLAS's
spinning threads and Numba's would otherwise fight over the cores).

The recursion kernels are built per activation ``code`` by :func:`recursion_kernels`: the code
is a closure constant, so the ``recursion.dual`` dispatch folds away and the inner ``j`` loop is
one branch-free formula that LLVM vectorises.  Numba's on-disk cache keys a closure by its cell
contents, so each specialisation is cached separately.  Inner products come from BLAS (NumPy
``matmul``) before the kernel runs.
"""

from __future__ import annotations

import functools
import hashlib
from pathlib import Path
from types import SimpleNamespace

import numpy as np
from llvmlite import ir
from numba.core import cgutils, types
from numba.extending import intrinsic

from .._jit import jit
from ..recursion import dual, dual_diag, dual_diag_grad, dual_grad, step


@functools.cache
def _math_fingerprint() -> int:
    """A hash of the files whose functions the kernels inline (read once per process).

    Numba's cache checks only the kernel's own file; the kernels hold this number as a closure
    constant (part of Numba's cache key), so editing the math recompiles them.  The kernels that
    call other kernels (``tile``, ``tile_grad``) are keyed through ``_jit``'s stable closure key.
    """
    root = Path(__file__).resolve().parent.parent
    digest = hashlib.sha256()
    for name in ("recursion.py", "_jit.py", "spec.py"):
        digest.update((root / name).read_bytes())
    return int.from_bytes(digest.digest()[:7], "little")


@functools.cache
def recursion_kernels(code: int) -> SimpleNamespace:
    """The ``diag`` and ``tile`` kernels specialised for one activation code."""
    fingerprint = _math_fingerprint()

    @jit
    def diag(params, first, steps, sqnorm, sig, nngp, ntk):
        """Recursion for x == y: sig[l, i] = Sigma(x_i, x_i) entering step l, and the outputs.

        O(n L) and serial: Numba's parallel launch costs more than it saves here (1.7 ms for
        n = 1000 while BLAS threads are spinning)."""
        if fingerprint < 0:  # never true; ties the cache entry to the math's source
            return
        p0, p1, p2 = params[0], params[1], params[2]
        for i in range(sqnorm.shape[0]):
            s = first[0] * sqnorm[i] + first[1]
            t = first[2] * sqnorm[i] + first[3]
            for layer in range(steps.shape[0]):
                sig[layer, i] = s
                k, kdot = dual_diag(code, p0, p1, p2, s)
                c = steps[layer]
                s, t = step(k, kdot, s, t, c[0], c[1], c[2], c[3], c[4])
            nngp[i] = s
            ntk[i] = t

    @jit
    def layer_row(p0, p1, p2, sxx, syy, s, t, res, w2, b2, alpha, beta):
        """One step for a row of pairs, in place.  A function of its own on purpose: LLVM
        vectorises this loop here, but not when it is inlined in ``tile`` (f64: 4.6x slower)."""
        if fingerprint < 0:
            return
        for j in range(s.shape[0]):
            k, kdot = dual(code, p0, p1, p2, sxx, syy[j], s[j])
            s[j], t[j] = step(k, kdot, s[j], t[j], res, w2, b2, alpha, beta)

    @jit
    def put_row(out, k, r, c0, vals):
        """out[k, r, c0 + j] = vals[j]."""
        row = out[k, r]
        for j in range(vals.shape[0]):
            row[c0 + j] = vals[j]

    @jit
    def copy_row(src, dst):
        for j in range(src.shape[0]):
            dst[j] = src[j]

    @jit
    def tile(params, first, steps, G, sig_rows, sig_cols, nngp, ntk, i0, j0, get_nngp, get_ntk, tau, write_at,
             readout, with_readout):
        """Kernel(s) of a tile from its inner products G (bi, bj), all layers fused in cache.

        Writes ``nngp[k, i0 + i, j0 + j]`` and/or ``ntk[k, ...]`` after ``write_at[k]`` steps
        (``write_at`` ascending; one entry ``[n_steps]`` for a plain kernel; outputs are 3-D
        C-contiguous, so every array the loops touch has unit stride); where ``with_readout[k]``
        the ``readout`` step (5 coefficients) is applied first to a copy of the state, as a
        residual network cut there ends.  ``sig_rows`` (L, bi) and ``sig_cols`` (L, bj) hold the
        diagonal Sigma's entering each step.  The outputs may alias ``G`` (with zero offsets):
        each row is read completely before it is written.

        Returns how many pairs have a first-layer 1 - rho^2 <= ``tau`` (see ``near_parallel``;
        ``tau = -inf`` counts none), counted in the same pass.
        """  # fmt: skip
        if fingerprint < 0:
            return
        p0, p1, p2 = params[0], params[1], params[2]
        bi, bj = G.shape
        f0, f1, f2, f3 = first[0], first[1], first[2], first[3]
        s = np.empty(bj, G.dtype)
        t = np.empty(bj, G.dtype)
        s2 = np.empty(bj, G.dtype)
        t2 = np.empty(bj, G.dtype)
        flagged = 0
        n_out = write_at.shape[0]
        one = G.dtype.type(1.0)
        zero = G.dtype.type(0.0)
        if steps.shape[0] == 0:  # a linear kernel has no angle to resolve
            tau = -np.inf
            sig_rows = np.ones((1, bi), G.dtype)
            sig_cols = np.ones((1, bj), G.dtype)
        first_cols = sig_cols[0]
        for i in range(bi):
            first_row = sig_rows[0, i]
            # 1 - rho^2 <= tau in units of the row's variance (the product of two variances
            # overflows or underflows at extreme scales): y - c^2 <= tau y, y = syy/sxx, c = sxy/sxx
            inv_row = one / first_row if first_row > zero else zero
            for j in range(bj):
                g = G[i, j]
                sij = f0 * g + f1
                s[j] = sij
                t[j] = f2 * g + f3
                ratio = first_cols[j] * inv_row
                rho = sij * inv_row
                flagged += ratio - rho * rho <= tau * ratio
            # The steps, with a residual network's readout spliced in where a shallower depth is
            # cut (on the state, saved before and restored after).  One call site of layer_row
            # for both, so a depth's readout rounds exactly as in that depth's own network.
            w = 0
            layer = 0
            n_steps = steps.shape[0]
            while True:
                while w < n_out and write_at[w] == layer and not with_readout[w]:
                    if get_nngp:
                        put_row(nngp, w, i0 + i, j0, s)
                    if get_ntk:
                        put_row(ntk, w, i0 + i, j0, t)
                    w += 1
                cut = w < n_out and write_at[w] == layer and with_readout[w]
                if cut:
                    copy_row(s, s2)
                    copy_row(t, t2)
                    c = readout
                elif layer < n_steps:
                    c = steps[layer]
                else:
                    break
                layer_row(p0, p1, p2, sig_rows[layer, i], sig_cols[layer], s, t, c[0], c[1], c[2], c[3], c[4])
                if cut:
                    if get_nngp:
                        put_row(nngp, w, i0 + i, j0, s)
                    if get_ntk:
                        put_row(ntk, w, i0 + i, j0, t)
                    w += 1
                    copy_row(s2, s)
                    copy_row(t2, t)
                else:
                    layer += 1
        return flagged

    @jit
    def pairs(params, first, steps, X, Y, sig_x, sig_y, ii, jj, nngp, ntk, i0, j0, get_nngp, get_ntk, write_at,
              readout, with_readout):
        """Recompute the entries (ii[k], jj[k]) of a tile from rows X[ii], Y[jj], in the dtype of X.

        Used in float64 for the nearly parallel pairs of a float32 tile (``near_parallel``);
        outputs, ``write_at``, ``readout`` and ``with_readout`` as in ``tile``.  Outputs after 0
        steps without a readout (a plain linear first layer) are left alone: a plain depth-0
        kernel is never refined.
        """  # fmt: skip
        if fingerprint < 0:
            return
        p0, p1, p2 = params[0], params[1], params[2]
        n_out = write_at.shape[0]
        r = readout
        for k in range(ii.shape[0]):
            i = ii[k]
            j = jj[k]
            g = X.dtype.type(0.0)
            for q in range(X.shape[1]):
                g += X[i, q] * Y[j, q]
            s = first[0] * g + first[1]
            t = first[2] * g + first[3]
            s_saved, t_saved = s, t
            w = 0
            layer = 0
            n_steps = steps.shape[0]
            while True:  # as in ``tile``: one step site, readouts spliced in where a depth is cut
                while w < n_out and write_at[w] == layer and not with_readout[w]:
                    if layer > 0:  # a plain depth-0 kernel is never refined
                        if get_nngp:
                            nngp[w, i0 + i, j0 + j] = s
                        if get_ntk:
                            ntk[w, i0 + i, j0 + j] = t
                    w += 1
                cut = w < n_out and write_at[w] == layer and with_readout[w]
                if cut:
                    s_saved, t_saved = s, t
                    c = r
                elif layer < n_steps:
                    c = steps[layer]
                else:
                    break
                kk, kdot = dual(code, p0, p1, p2, sig_x[layer, i], sig_y[layer, j], s)
                s, t = step(kk, kdot, s, t, c[0], c[1], c[2], c[3], c[4])
                if cut:
                    if get_nngp:
                        nngp[w, i0 + i, j0 + j] = s
                    if get_ntk:
                        ntk[w, i0 + i, j0 + j] = t
                    w += 1
                    s, t = s_saved, t_saved
                else:
                    layer += 1

    @jit
    def grad_step(k, kdot, dk, dkdot, s, t, ds, dt, c, dc):
        """Derivative of one ``step`` along one hyper-parameter: (dSigma, dTheta) after it."""
        ds_new = c[0] * ds + dc[1] * k + c[1] * dk + dc[2]
        dt_new = c[0] * dt + dc[3] * k + c[3] * dk + dc[4] + (dc[1] * kdot + c[1] * dkdot) * t + c[1] * kdot * dt
        return ds_new, dt_new

    @jit
    def diag_grad(params, first, dfirst, steps, dsteps, sqnorm, sig, dsig, out, dout, get_ntk):
        """``diag`` with forward-mode derivatives in two hyper-parameters (float64).

        ``dfirst`` (2, 4) and ``dsteps`` (2, L, 5) are the derivatives of ``first`` and
        ``steps``; ``dsig[l, i, p]`` receives dSigma(x_i, x_i)/dp entering step l, ``out[i]``
        the NNGP (or NTK with ``get_ntk``) and ``dout[i, p]`` its derivatives.
        """
        if fingerprint < 0:
            return
        p0, p1, p2 = params[0], params[1], params[2]
        ds = np.empty(2)
        dt = np.empty(2)
        for i in range(sqnorm.shape[0]):
            q = sqnorm[i]
            s = first[0] * q + first[1]
            t = first[2] * q + first[3]
            for p in range(2):
                ds[p] = dfirst[p, 0] * q + dfirst[p, 1]
                dt[p] = dfirst[p, 2] * q + dfirst[p, 3]
            for layer in range(steps.shape[0]):
                sig[layer, i] = s
                k, kdot, dk, dkdot = dual_diag_grad(code, p0, p1, p2, s)
                c = steps[layer]
                for p in range(2):
                    dsig[layer, i, p] = ds[p]
                    dc = dsteps[p, layer]
                    ds[p], dt[p] = grad_step(k, kdot, dk * ds[p], dkdot * ds[p], s, t, ds[p], dt[p], c, dc)
                s, t = step(k, kdot, s, t, c[0], c[1], c[2], c[3], c[4])
            out[i] = t if get_ntk else s
            for p in range(2):
                dout[i, p] = dt[p] if get_ntk else ds[p]

    @jit
    def tile_grad(params, first, dfirst, steps, dsteps, G, sig_rows, dsig_rows, sig_cols, dsig_cols, out, dout,
                  i0, j0, get_ntk):
        """``tile`` with forward-mode derivatives in two hyper-parameters (float64, one output).

        Same pass, same order: each pair carries (Sigma, Theta) and their derivatives through
        the layers, with the chain rule through ``recursion.dual_grad``.  Writes
        ``out[i0 + i, j0 + j]`` and ``dout[i0 + i, j0 + j, p]``.  The two derivatives are
        scalars (not a length-2 array) so that they stay in registers.
        """  # fmt: skip
        if fingerprint < 0:
            return
        p0, p1, p2 = params[0], params[1], params[2]
        for i in range(G.shape[0]):
            for j in range(G.shape[1]):
                g = G[i, j]
                s = first[0] * g + first[1]
                t = first[2] * g + first[3]
                ds0 = dfirst[0, 0] * g + dfirst[0, 1]
                dt0 = dfirst[0, 2] * g + dfirst[0, 3]
                ds1 = dfirst[1, 0] * g + dfirst[1, 1]
                dt1 = dfirst[1, 2] * g + dfirst[1, 3]
                for layer in range(steps.shape[0]):
                    sxx = sig_rows[layer, i]
                    syy = sig_cols[layer, j]
                    k, kdot, kx, ky, kxy, dx, dy, dxy = dual_grad(code, p0, p1, p2, sxx, syy, s)
                    c = steps[layer]
                    x0, y0 = dsig_rows[layer, i, 0], dsig_cols[layer, j, 0]
                    x1, y1 = dsig_rows[layer, i, 1], dsig_cols[layer, j, 1]
                    ds0, dt0 = grad_step(
                        k, kdot, kx * x0 + ky * y0 + kxy * ds0, dx * x0 + dy * y0 + dxy * ds0,
                        s, t, ds0, dt0, c, dsteps[0, layer],
                    )  # fmt: skip
                    ds1, dt1 = grad_step(
                        k, kdot, kx * x1 + ky * y1 + kxy * ds1, dx * x1 + dy * y1 + dxy * ds1,
                        s, t, ds1, dt1, c, dsteps[1, layer],
                    )  # fmt: skip
                    s, t = step(k, kdot, s, t, c[0], c[1], c[2], c[3], c[4])
                if get_ntk:
                    out[i0 + i, j0 + j] = t
                    dout[i0 + i, j0 + j, 0] = dt0
                    dout[i0 + i, j0 + j, 1] = dt1
                else:
                    out[i0 + i, j0 + j] = s
                    dout[i0 + i, j0 + j, 0] = ds0
                    dout[i0 + i, j0 + j, 1] = ds1

    return SimpleNamespace(
        diag=diag, tile=tile, layer_row=layer_row, pairs=pairs, diag_grad=diag_grad, tile_grad=tile_grad
    )


@jit
def near_parallel(G, w, b, sig_x, sig_y, tau, skip_diagonal):
    """Indices (i, j) whose first-layer covariance (w G + b) is within ``tau`` of singular.

    For these pairs float32 cannot resolve the angle: 1 - rho^2 < tau, where the inner
    products' rounding already moves 1 - rho^2 by ~sqrt(d) 1e-7.  ``skip_diagonal`` leaves out
    i == j (a symmetric Gram's diagonal, which gets its exact values anyway).
    """
    bi, bj = G.shape
    one = G.dtype.type(1.0)
    zero = G.dtype.type(0.0)
    count = 0
    for i in range(bi):
        inv_row = one / sig_x[i] if sig_x[i] > zero else zero  # scaled as in ``tile``
        for j in range(bj):
            c = (w * G[i, j] + b) * inv_row
            y = sig_y[j] * inv_row
            count += (y - c * c <= tau * y) and not (skip_diagonal and i == j)
    ii = np.empty(count, np.int64)
    jj = np.empty(count, np.int64)
    k = 0
    for i in range(bi):
        inv_row = one / sig_x[i] if sig_x[i] > zero else zero
        for j in range(bj):
            c = (w * G[i, j] + b) * inv_row
            y = sig_y[j] * inv_row
            if y - c * c <= tau * y and not (skip_diagonal and i == j):
                ii[k] = i
                jj[k] = j
                k += 1
    return ii, jj


@jit
def mirror(A, i0, i1, j0, j1):
    """A[j0:j1, i0:i1] = A[i0:i1, j0:j1].T in cache-sized blocks (a symmetric Gram's lower part)."""
    block = 32
    for ja in range(j0, j1, block):
        jz = min(ja + block, j1)
        for ia in range(i0, i1, block):
            iz = min(ia + block, i1)
            for j in range(ja, jz):
                dst = A[j]
                for i in range(ia, iz):
                    dst[i] = A[i, j]


@jit
def place(A, T, i0, j0, mirror):
    """A[i0:i0+bi, j0:j0+bj] = T and, with ``mirror``, A[j0:j0+bj, i0:i0+bi] = T.T (in cache-sized blocks)."""
    bi, bj = T.shape
    for i in range(bi):
        row = A[i0 + i]
        for j in range(bj):
            row[j0 + j] = T[i, j]
    if mirror:
        block = 32
        for ja in range(0, bj, block):
            jz = min(ja + block, bj)
            for ia in range(0, bi, block):
                iz = min(ia + block, bi)
                for j in range(ja, jz):
                    dst = A[j0 + j]
                    for i in range(ia, iz):
                        dst[i0 + i] = T[i, j]


def gemm(A: np.ndarray, B: np.ndarray, out: np.ndarray) -> None:
    """out = A @ B.T through BLAS."""
    np.matmul(A, B.T, out=out)


# ----------------------------------------------------------- assembled tiles: every output once
@intrinsic
def _stream_store(typingctx, arr, idx, val):
    """``arr[idx] = val`` (1-D ``arr``) as a non-temporal store: the line goes to memory without
    being read first (no read-for-ownership) and without evicting the cache."""
    sig = types.void(arr, idx, val)

    def codegen(context, builder, signature, args):
        arrty = signature.args[0]
        ary = context.make_array(arrty)(context, builder, args[0])
        ptr = cgutils.get_item_pointer(context, builder, arrty, ary, [args[1]], wraparound=False)
        value = context.cast(builder, args[2], signature.args[2], arrty.dtype)
        store = builder.store(value, ptr)
        store.set_metadata("nontemporal", builder.module.add_metadata([ir.Constant(ir.IntType(32), 1)]))
        return context.get_dummy_value()

    return sig, codegen


@intrinsic
def _store_fence(typingctx):
    """A full fence: the non-temporal stores before it are visible to every thread after it."""

    def codegen(context, builder, signature, args):
        builder.fence("seq_cst")
        return context.get_dummy_value()

    return types.void(), codegen


@jit
def store_strip(out, strip, i0, j0, mirror, stream):
    """``out[k, i0 + r, j0 + j] = strip[k, r, j]`` and, with ``mirror``, ``out[k, j0 + j, i0 + r]``
    too (the strip is a few rows, in L1, so the transposed reads are cheap).  With ``stream`` the
    stores are non-temporal: the caller aligns the strip's rows so that each mirrored row segment
    fills whole 64-byte lines."""
    n_out, rows, cols = strip.shape
    for k in range(n_out):
        dst = out[k]
        src = strip[k]
        for r in range(rows):
            row = dst[i0 + r]
            vals = src[r]
            if stream:
                for j in range(cols):
                    _stream_store(row, j0 + j, vals[j])
            else:
                for j in range(cols):
                    row[j0 + j] = vals[j]
        if mirror:
            for j in range(cols):
                row = dst[j0 + j]
                if stream:
                    for r in range(rows):
                        _stream_store(row, i0 + r, src[r, j])
                else:
                    for r in range(rows):
                        row[i0 + r] = src[r, j]


@jit
def store_fence():
    """Order the non-temporal stores of :func:`store_strip` before what follows (once per tile)."""
    _store_fence()


@functools.cache
def assembled_kernels(code: int) -> SimpleNamespace:
    """``tile`` of :func:`recursion_kernels` run over strips of a few rows, each strip's outputs
    stored (and, for a tile above the diagonal of K(X, X), mirrored) while still in L1."""
    fingerprint = _math_fingerprint()
    tile = recursion_kernels(code).tile

    @jit
    def assembled_tile(params, first, steps, G, sig_rows, sig_cols, nngp, ntk, i0, j0, get_nngp, get_ntk, tau,
                       write_at, readout, with_readout, mirror, stream, phase):
        """``tile`` with the same arguments, then: ``mirror`` also writes ``nngp[k, j0 + j, i0 + i]``
        (and ntk); ``stream`` makes the output stores non-temporal.  The rows are computed in
        strips of one 64-byte line of outputs (each row of ``tile`` is independent of the
        others, so the values are those of one ``tile`` call); strip boundaries fall on the
        rows ``i0 + i`` with ``(phase + i0 + i) % line == 0``, ``phase`` the column of the
        outputs' first 64-byte-aligned address (so mirrored stores fill whole lines).

        Returns the count of nearly parallel pairs, as ``tile``.
        """  # fmt: skip
        if fingerprint < 0:
            return 0
        bi, bj = G.shape
        n_out = write_at.shape[0]
        n_sig = sig_rows.shape[0]
        line = max(1, 64 // G.itemsize)
        sig_buf = np.empty(n_sig * line, sig_rows.dtype)
        buf_n = np.empty(n_out * line * bj, G.dtype)
        buf_t = np.empty(n_out * line * bj, G.dtype) if get_nngp and get_ntk else buf_n
        flagged = 0
        r0 = 0
        while r0 < bi:
            r1 = min(bi, r0 + line - (phase + i0 + r0) % line)
            rows = r1 - r0
            sig = sig_buf[: n_sig * rows].reshape(n_sig, rows)
            for layer in range(n_sig):
                for r in range(rows):
                    sig[layer, r] = sig_rows[layer, r0 + r]
            part_n = buf_n[: n_out * rows * bj].reshape(n_out, rows, bj)
            part_t = buf_t[: n_out * rows * bj].reshape(n_out, rows, bj)
            flagged += tile(params, first, steps, G[r0:r1], sig, sig_cols, part_n, part_t, 0, 0, get_nngp, get_ntk,
                            tau, write_at, readout, with_readout)  # fmt: skip
            if get_nngp:
                store_strip(nngp, part_n, i0 + r0, j0, mirror, stream)
            if get_ntk:
                store_strip(ntk, part_t, i0 + r0, j0, mirror, stream)
            r0 = r1
        if stream:
            _store_fence()
        return flagged

    return SimpleNamespace(tile=assembled_tile)


@jit
def store_tile(out, part, i0, j0, mirror, stream, phase):
    """A tile computed into scratch, ``part`` (n_out, bi, bj), written at (i0, j0) of ``out`` (and
    mirrored) in the strips and with the stores of ``assembled_kernels(code).tile`` (each strip
    copied to a C-contiguous buffer first, as the tile kernel leaves it)."""
    n_out, bi, bj = part.shape
    line = max(1, 64 // part.itemsize)
    buf = np.empty(n_out * line * bj, part.dtype)  # one strip, C-contiguous like the tile kernel's
    r0 = 0
    while r0 < bi:
        r1 = min(bi, r0 + line - (phase + i0 + r0) % line)
        strip = buf[: n_out * (r1 - r0) * bj].reshape(n_out, r1 - r0, bj)
        strip[:] = part[:, r0:r1]
        store_strip(out, strip, i0 + r0, j0, mirror, stream)
        r0 = r1
    if stream:
        _store_fence()


@jit
def symmetrize_block(block, diag):
    """A square tile on the diagonal of K(X, X): its lower part from its upper part, and the
    exact diagonal ``diag`` (one call instead of NumPy's masked copy, which allocates a mask)."""
    k = block.shape[0]
    for i in range(k):
        block[i, i] = diag[i]
        for j in range(i + 1, k):
            block[j, i] = block[i, j]


@jit
def store_constant_tile(out, value, i0, i1, j0, j1, mirror, stream, phase):
    """The stores of ``assembled_kernels(code).tile`` alone, nothing computed: ``value`` written
    at [i0:i1, j0:j1] of every slice of ``out`` (and mirrored) in the kernel's strips, from one
    strip buffer in L1.  The floor under writing the outputs (``ntkfast bench --depths``)."""
    line = max(1, 64 // out.itemsize)
    n_out, bj = out.shape[0], j1 - j0
    buf = np.full(n_out * line * bj, value, out.dtype)
    r0 = i0
    while r0 < i1:
        r1 = min(i1, r0 + line - (phase + r0) % line)
        store_strip(out, buf[: n_out * (r1 - r0) * bj].reshape(n_out, r1 - r0, bj), r0, j0, mirror, stream)
        r0 = r1
    if stream:
        _store_fence()
