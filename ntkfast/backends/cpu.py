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

from .._jit import atan2_upper, jit, jit_inline
from ..recursion import (
    ANGLE_CODES,
    LOG_GRAD_CODES,
    angle_radius,
    dual,
    dual_angle,
    dual_diag,
    dual_diag_grad,
    dual_grad,
    dual_grad_log,
    grad_hoist,
    step,
)
from ..spec import ABRELU

# columns per chunk of the gradient's row kernel (``layer_grad_row``): its state lives in one flat
# array at offsets that are multiples of this compile-time constant
GRAD_CHUNK = 256


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

    by_angle = code in ANGLE_CODES  # a closure constant: the loop split below

    @jit
    def layer_row(p0, p1, p2, sxx, syy, s, t, r, theta, res, w2, b2, alpha, beta):
        """One step for a row of pairs, in place (``r``, ``theta``: scratch of the row's length).
        A function of its own on purpose: LLVM vectorises this loop here, but not when it is
        inlined in ``tile`` (f64: 4.6x slower).

        For ``ANGLE_CODES`` the step is three loops: the angle's r (square root), its theta
        (division, polynomial), then (K, Kdot) and the step, through ``r`` and ``theta``.  The
        same operations as one loop, but each loop's dependency chain is a third as long: one
        pair's chain (sqrt, then the division, then the polynomial: ~100 cycles) is what bounds
        the fused loop, with few pairs in flight (the out-of-order window holds about two of its
        ~75 vector operations each); split, 1.5x the pairs per second with AVX2 and AVX-512."""
        if fingerprint < 0:
            return
        if by_angle:
            for j in range(s.shape[0]):
                r[j] = angle_radius(sxx, syy[j], s[j])
            for j in range(s.shape[0]):
                theta[j] = atan2_upper(r[j], s[j])
            if res == 0.0:  # every step of a plain MLP: the loop without the identity branch's terms
                for j in range(s.shape[0]):
                    k, kdot = dual_angle(code, p0, p1, p2, sxx, syy[j], s[j], r[j], theta[j])
                    s[j], t[j] = step(k, kdot, s[j], t[j], res, w2, b2, alpha, beta, False)
            else:
                for j in range(s.shape[0]):
                    k, kdot = dual_angle(code, p0, p1, p2, sxx, syy[j], s[j], r[j], theta[j])
                    s[j], t[j] = step(k, kdot, s[j], t[j], res, w2, b2, alpha, beta)
        else:  # one loop: a second copy of the larger families' bodies stopped GELU's vectorising
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
        r = np.empty(bj, G.dtype)  # layer_row's scratch
        theta = np.empty(bj, G.dtype)
        flagged = 0
        n_out = write_at.shape[0]
        one = G.dtype.type(1.0)
        zero = G.dtype.type(0.0)
        if steps.shape[0] == 0:  # a linear kernel has no angle to resolve
            tau = -np.inf
            sig_rows = np.ones((1, bi), G.dtype)
            sig_cols = np.ones((1, bj), G.dtype)
        first_cols = sig_cols[0]
        counting = tau > -np.inf
        for i in range(bi):
            first_row = sig_rows[0, i]
            # 1 - rho^2 <= tau in units of the row's variance (the product of two variances
            # overflows or underflows at extreme scales): y - c^2 <= tau y, y = syy/sxx, c = sxy/sxx
            inv_row = one / first_row if first_row > zero else zero
            if counting:
                for j in range(bj):
                    g = G[i, j]
                    sij = f0 * g + f1
                    s[j] = sij
                    t[j] = f2 * g + f3
                    ratio = first_cols[j] * inv_row
                    rho = sij * inv_row
                    flagged += ratio - rho * rho <= tau * ratio
            else:  # tau = -inf counts none: the first layer alone
                for j in range(bj):
                    g = G[i, j]
                    s[j] = f0 * g + f1
                    t[j] = f2 * g + f3
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
                layer_row(p0, p1, p2, sig_rows[layer, i], sig_cols[layer], s, t, r, theta, c[0], c[1], c[2], c[3],
                          c[4])  # fmt: skip
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
    def grad_step(k, kdot, dk, dkdot, t, ds, dt, res, w2, alpha, dw2, db2, dalpha, dbeta):
        """Derivative of one ``step`` along one hyper-parameter: (dSigma, dTheta) after it.

        ``res, w2, alpha`` are the step's coefficients, ``dw2, db2, dalpha, dbeta`` their
        derivatives (res is structure: its derivative is 0); scalars, so that the row loop
        keeps them in registers."""
        ds_new = res * ds + dw2 * k + w2 * dk + db2
        dt_new = res * dt + dalpha * k + alpha * dk + dbeta + (dw2 * kdot + w2 * dkdot) * t + w2 * kdot * dt
        return ds_new, dt_new

    @jit
    def diag_grad(params, first, dfirst, steps, dsteps, sqnorm, sig, dsig, out, dout, get_ntk):
        """``diag`` with forward-mode derivatives in two hyper-parameters (float64).

        ``dfirst`` (2, 4) and ``dsteps`` (2, L, 5) are the derivatives of ``first`` and
        ``steps``; ``dsig[l, p, i]`` receives dSigma(x_i, x_i)/dp entering step l (parameter-major,
        so that a tile's column slice is contiguous), ``out[i]`` the NNGP (or NTK with
        ``get_ntk``) and ``dout[p, i]`` its derivatives.
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
                    dsig[layer, p, i] = ds[p]
                    dc = dsteps[p, layer]
                    ds[p], dt[p] = grad_step(k, kdot, dk * ds[p], dkdot * ds[p], t, ds[p], dt[p],
                                             c[0], c[1], c[3], dc[1], dc[2], dc[3], dc[4])  # fmt: skip
                s, t = step(k, kdot, s, t, c[0], c[1], c[2], c[3], c[4])
            out[i] = t if get_ntk else s
            for p in range(2):
                dout[p, i] = dt[p] if get_ntk else ds[p]

    log_form = code in LOG_GRAD_CODES  # a closure constant: the chain rule in the family's log variables

    @jit
    def log_scale(p0, p1, p2, s):
        """What ``tile_grad`` multiplies a row's or column's dSigma by: ``recursion.grad_hoist`` for
        LOG_GRAD_CODES, else 1.  ABReLU at Sigma = 0: 0 (its 1/max(s, tiny) multiplies partials that
        are 0 there, and dSigma/tiny could overflow)."""
        if log_form:
            h = grad_hoist(code, p0, p1, p2, s)
            return 0.0 if code == ABRELU and s <= 0.0 else h
        return 1.0

    @jit_inline
    def pair_grad(p0, p1, p2, sxx, x0, x1, syy, y0, y1, s, t, a0, b0, a1, b1, res, w2, b2, alpha, beta,
                  dw2, dal, db2, dbe, residual):
        """One pair's step with its two derivatives (``layer_grad_row``'s loop body): the new
        (Sigma, Theta, dSigma/dp0, dTheta/dp0, dSigma/dp1, dTheta/dp1) from the old (s, t, a0, b0,
        a1, b1).  ``residual`` False (a compile-time constant at each call) leaves out the identity
        branch's terms (res = 0 there; 0 * x cannot be folded away under our fastmath flags)."""
        if log_form:  # (folds at compile time) x, y are derivatives of the log variables: one partial each
            k, kdot, kl, dl, dxy, kxy, px, pz = dual_grad_log(code, p0, p1, p2, sxx, syy, s)
            v0 = x0 * px + y0
            v1 = x1 * px + y1
            dk0 = kl * (v0 + pz * a0) + kxy * a0
            dd0 = dl * v0 + dxy * a0
            dk1 = kl * (v1 + pz * a1) + kxy * a1
            dd1 = dl * v1 + dxy * a1
        else:
            k, kdot, kx, ky, kxy, dx, dy, dxy = dual_grad(code, p0, p1, p2, sxx, syy, s)
            dk0 = kx * x0 + ky * y0 + kxy * a0
            dd0 = dx * x0 + dy * y0 + dxy * a0
            dk1 = kx * x1 + ky * y1 + kxy * a1
            dd1 = dx * x1 + dy * y1 + dxy * a1
        wk = w2 * kdot
        # ``grad_step`` with the structurally zero derivatives of the coefficients left out
        na0 = dw2 * k + w2 * dk0
        nb0 = dal * k + alpha * dk0 + (dw2 * kdot + w2 * dd0) * t + wk * b0
        na1 = w2 * dk1 + db2
        nb1 = alpha * dk1 + dbe + (w2 * dd1) * t + wk * b1
        if residual:
            na0 += res * a0
            nb0 += res * b0
            na1 += res * a1
            nb1 += res * b1
        # K exactly as the forward kernel rounds it (``layer_row``: ANGLE_CODES' steps with res = 0
        # leave out the res terms)
        ns, nt = step(k, kdot, s, t, res, w2, b2, alpha, beta, residual or not by_angle)
        return ns, nt, na0, nb0, na1, nb1

    @jit
    def layer_grad_row(p0, p1, p2, sxx, x0, x1, col, st, w, c, dc0, dc1):
        """One step with its two derivatives for a chunk of ``w`` pairs of a row, in place (the
        gradient's ``layer_row``).

        ``sxx, x0, x1``: the row's diagonal Sigma and its two derivatives; ``col`` holds the columns'
        (``syy, y0, y1`` at offsets 0, GRAD_CHUNK, 2 GRAD_CHUNK), ``st`` the pairs' state (Sigma,
        Theta, dSigma/dp0, dTheta/dp0, dSigma/dp1, dTheta/dp1, each GRAD_CHUNK apart).  For the
        families of ``recursion.LOG_GRAD_CODES`` (ABReLU, erf) the derivatives come as those of the
        family's log variable (dSigma/dp times ``recursion.grad_hoist``: 1/Sigma for ABReLU;
        ``tile_grad`` multiplies once per row and column), so the chain rule takes
        ``recursion.dual_grad_log``'s one partial per variance and divides nothing per pair.

        Per pair (``pair_grad``) one branch-free ``recursion.dual_grad`` or ``dual_grad_log`` (value and partials
        from the same angle, square root and determinant), then the chain rule, with the
        derivatives of the step's coefficients in (log W_std, log b_std) from ``dc0`` and ``dc1``
        (``dsteps[p, layer]``): d/dlog W_std moves only W^2 and alpha, d/dlog b_std only b^2 and
        beta (``MLP.layer_coefficient_gradients``), and the zero terms are left out, as are the
        identity branch's outside a residual block (two copies of the loop).  Two flat arrays at
        compile-time offsets, not six arrays: LLVM then proves the accesses independent (six
        separate arrays need more runtime overlap checks than its vectoriser allows, and the loop
        stays scalar).  A function of its own so that LLVM vectorises the loop, as ``layer_row``."""
        if fingerprint < 0:
            return
        res, w2, b2, alpha, beta = c[0], c[1], c[2], c[3], c[4]
        dw2, dal = dc0[1], dc0[3]  # d/dlog W_std of W^2 and alpha
        db2, dbe = dc1[2], dc1[4]  # d/dlog b_std of b^2 and beta
        W = GRAD_CHUNK
        if res == 0.0:
            for j in range(w):
                (st[j], st[W + j], st[2 * W + j], st[3 * W + j], st[4 * W + j], st[5 * W + j]) = pair_grad(
                    p0, p1, p2, sxx, x0, x1, col[j], col[W + j], col[2 * W + j],
                    st[j], st[W + j], st[2 * W + j], st[3 * W + j], st[4 * W + j], st[5 * W + j],
                    res, w2, b2, alpha, beta, dw2, dal, db2, dbe, False,
                )  # fmt: skip
        else:
            for j in range(w):
                (st[j], st[W + j], st[2 * W + j], st[3 * W + j], st[4 * W + j], st[5 * W + j]) = pair_grad(
                    p0, p1, p2, sxx, x0, x1, col[j], col[W + j], col[2 * W + j],
                    st[j], st[W + j], st[2 * W + j], st[3 * W + j], st[4 * W + j], st[5 * W + j],
                    res, w2, b2, alpha, beta, dw2, dal, db2, dbe, True,
                )  # fmt: skip

    @jit
    def tile_grad(params, first, dfirst, steps, dsteps, G, sig_rows, dsig_rows, sig_cols, dsig_cols, out, dout,
                  i0, j0, get_ntk, mirror, stream, phase):
        """``tile`` with forward-mode derivatives in two hyper-parameters (float64, one output),
        stored as ``assembled_kernels(code).tile`` stores: in strips of rows, mirrored while in L1.

        Each strip of rows goes over chunks of GRAD_CHUNK columns: each chunk of a row carries
        (Sigma, Theta) and their two derivatives through the layers (``layer_grad_row``).
        ``dsig_rows`` (L, 2, bi) and ``dsig_cols`` (L, 2, bj) hold the diagonal's derivatives
        entering each step.  Writes ``out[0, i0 + i, j0 + j]`` (``out`` (1, n, m)) and
        ``dout[p, i0 + i, j0 + j]`` (``dout`` (2, n, m)) and, with ``mirror``, their mirror images
        ``[., j0 + j, i0 + i]``; ``stream``: non-temporal stores, strip boundaries on the rows with
        ``(phase + i0 + i) % 8 == 0`` (as ``assembled_kernels``; ``phase`` from ``engine.stream_phase``).
        """  # fmt: skip
        if fingerprint < 0:
            return
        p0, p1, p2 = params[0], params[1], params[2]
        bi, bj = G.shape
        n_steps = steps.shape[0]
        f0, f1, f2, f3 = first[0], first[1], first[2], first[3]
        e00, e01, e02, e03 = dfirst[0, 0], dfirst[0, 1], dfirst[0, 2], dfirst[0, 3]
        e10, e11, e12, e13 = dfirst[1, 0], dfirst[1, 1], dfirst[1, 2], dfirst[1, 3]
        W = GRAD_CHUNK
        n_chunks = (bj + W - 1) // W
        st = np.empty(6 * W)
        # the columns' (Sigma, dSigma/dp0, dSigma/dp1) entering each step, per chunk, laid out once per
        # tile (for LOG_GRAD_CODES the derivatives of the family's log variable; see ``layer_grad_row``)
        cols = np.empty(max(n_chunks * n_steps, 1) * 3 * W)
        for chunk in range(n_chunks):
            a0 = chunk * W
            w = min(W, bj - a0)
            for layer in range(n_steps):
                base = (chunk * n_steps + layer) * 3 * W
                for j in range(w):
                    syy = sig_cols[layer, a0 + j]
                    scale = log_scale(p0, p1, p2, syy)
                    cols[base + j] = syy
                    cols[base + W + j] = dsig_cols[layer, 0, a0 + j] * scale
                    cols[base + 2 * W + j] = dsig_cols[layer, 1, a0 + j] * scale
        o = 1 if get_ntk else 0  # which of (Sigma, Theta) is the output
        line = 8  # 64-byte lines of float64
        buf_k = np.empty(line * bj)
        buf_d = np.empty(2 * line * bj)
        r0 = 0
        while r0 < bi:
            r1 = min(bi, r0 + line - (phase + i0 + r0) % line)
            rows = r1 - r0
            part_k = buf_k[: rows * bj].reshape(1, rows, bj)
            part_d = buf_d[: 2 * rows * bj].reshape(2, rows, bj)
            for chunk in range(n_chunks):
                a0 = chunk * W
                w = min(W, bj - a0)
                for r in range(rows):
                    i = r0 + r
                    for j in range(w):
                        g = G[i, a0 + j]
                        st[j] = f0 * g + f1
                        st[W + j] = f2 * g + f3
                        st[2 * W + j] = e00 * g + e01
                        st[3 * W + j] = e02 * g + e03
                        st[4 * W + j] = e10 * g + e11
                        st[5 * W + j] = e12 * g + e13
                    for layer in range(n_steps):
                        base = (chunk * n_steps + layer) * 3 * W
                        sxx = sig_rows[layer, i]
                        scale = log_scale(p0, p1, p2, sxx)
                        layer_grad_row(p0, p1, p2, sxx, dsig_rows[layer, 0, i] * scale,
                                       dsig_rows[layer, 1, i] * scale, cols[base:base + 3 * W], st, w, steps[layer],
                                       dsteps[0, layer], dsteps[1, layer])  # fmt: skip
                    row = part_k[0, r]
                    row0 = part_d[0, r]
                    row1 = part_d[1, r]
                    for j in range(w):
                        row[a0 + j] = st[o * W + j]
                        row0[a0 + j] = st[(2 + o) * W + j]
                        row1[a0 + j] = st[(4 + o) * W + j]
            store_strip(out, part_k, i0 + r0, j0, mirror, stream)
            store_strip(dout, part_d, i0 + r0, j0, mirror, stream)
            r0 = r1
        if stream:
            _store_fence()

    return SimpleNamespace(
        diag=diag, tile=tile, layer_row=layer_row, pairs=pairs, diag_grad=diag_grad, tile_grad=tile_grad,
        layer_grad_row=layer_grad_row,
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
# Streaming (non-temporal) stores go to memory without the line being read first (no read for
# ownership) and without evicting the cache.  They address memory by integer addresses computed
# from the output's data pointer and strides: a view per row would take a reference (an atomic
# add), and a locked instruction waits until every non-temporal store before it has reached
# memory, so one per line made the stores 20-30x slower.
_NONTEMPORAL = [ir.Constant(ir.IntType(32), 1)]


def _nontemporal_store(builder, value, ptr, align):
    store = builder.store(value, ptr, align=align)
    store.set_metadata("nontemporal", builder.module.add_metadata(_NONTEMPORAL))


def _same_dtype(like, src):
    return isinstance(like, types.Array) and isinstance(src, types.Array) and like.dtype == src.dtype


@intrinsic
def _stream_store_at(typingctx, like, address, src, si):
    """``*address = src[si]`` (1-D ``src`` of ``like``'s dtype) as one scalar non-temporal store."""
    if not _same_dtype(like, src):
        return None

    def codegen(context, builder, signature, args):
        srcty = signature.args[2]
        elem = context.get_data_type(srcty.dtype)
        ary = context.make_array(srcty)(context, builder, args[2])
        value = builder.load(cgutils.get_item_pointer(context, builder, srcty, ary, [args[3]], wraparound=False))
        ptr = builder.inttoptr(args[1], elem.as_pointer())
        _nontemporal_store(builder, value, ptr, context.get_abi_sizeof(elem))
        return context.get_dummy_value()

    return types.void(like, types.intp, src, types.intp), codegen


def _line_codegen(strided):
    """Code of :func:`_stream_line_at`: the 64 bytes ``src[si + q * step]`` (``q`` < 64 / itemsize)
    as one vector, stored with one aligned non-temporal store (``vmovntpd``/``vmovntps``: one zmm
    store with AVX-512, ymm or xmm pieces with AVX2) instead of a scalar store per element."""

    def codegen(context, builder, signature, args):
        srcty = signature.args[2]
        elem = context.get_data_type(srcty.dtype)
        lanes = 64 // context.get_abi_sizeof(elem)
        vec_type = ir.VectorType(elem, lanes)
        src = context.make_array(srcty)(context, builder, args[2])
        if strided:  # lanes gathered from src[si + q * step] (a column of a strip in L1)
            vec = ir.Constant(vec_type, ir.Undefined)
            for q in range(lanes):
                idx = builder.add(args[3], builder.mul(args[4], ir.Constant(args[4].type, q)))
                ptr = cgutils.get_item_pointer(context, builder, srcty, src, [idx], wraparound=False)
                vec = builder.insert_element(vec, builder.load(ptr), ir.Constant(ir.IntType(32), q))
        else:  # src[si : si + lanes]: one unaligned vector load
            ptr = cgutils.get_item_pointer(context, builder, srcty, src, [args[3]], wraparound=False)
            vec = builder.load(builder.bitcast(ptr, vec_type.as_pointer()), align=context.get_abi_sizeof(elem))
        _nontemporal_store(builder, vec, builder.inttoptr(args[1], vec_type.as_pointer()), 64)
        return context.get_dummy_value()

    return codegen


@intrinsic
def _stream_line_at(typingctx, like, address, src, si):
    """The 64 bytes at ``address`` (64-byte aligned) = ``src[si : si + 64 / itemsize]`` (1-D
    ``src`` of ``like``'s dtype), as one non-temporal vector store."""
    if not _same_dtype(like, src):
        return None
    return types.void(like, types.intp, src, types.intp), _line_codegen(False)


@intrinsic
def _stream_line_strided_at(typingctx, like, address, src, si, step):
    """As :func:`_stream_line_at`, the elements ``src[si + q * step]``."""
    if not _same_dtype(like, src):
        return None
    return types.void(like, types.intp, src, types.intp, types.intp), _line_codegen(True)


def _lane_mask(lanes):
    return ir.Constant(ir.VectorType(ir.IntType(32), len(lanes)), lanes)


def _transpose(builder, rows):
    """The transpose of the square block whose rows are the vectors ``rows`` (N of N lanes, N a
    power of two): log2(N) stages of N two-input shuffles, stage b swapping bit b of the row
    and column indices (vpermt2ps/vpermt2pd, vunpck* with AVX-512)."""
    n = len(rows)
    rows = list(rows)
    s = 1
    while s < n:
        low = _lane_mask([c if c & s == 0 else n + c - s for c in range(n)])
        high = _lane_mask([c + s if c & s == 0 else n + c for c in range(n)])
        for i in range(n):
            if i & s == 0:
                a, b = rows[i], rows[i + s]
                rows[i], rows[i + s] = builder.shuffle_vector(a, b, low), builder.shuffle_vector(a, b, high)
        s *= 2
    return rows


@intrinsic
def _stream_block_and_mirror_at(typingctx, like, address, mirror_address, row_stride, src, si, src_stride):
    """A square block of N = 64 / itemsize rows ``src[si + r * src_stride : ... + N]``, stored
    as it is at ``address + r * row_stride`` and transposed at ``mirror_address + q * row_stride``
    (every address 64-byte aligned): the upper part and the mirror image of N rows by N columns
    of a strip from one read of it, 2N non-temporal vector stores."""
    if not _same_dtype(like, src):
        return None

    def codegen(context, builder, signature, args):
        srcty = signature.args[4]
        elem = context.get_data_type(srcty.dtype)
        size = context.get_abi_sizeof(elem)
        lanes = 64 // size
        vec_type = ir.VectorType(elem, lanes)
        src = context.make_array(srcty)(context, builder, args[4])
        rows = []
        for r in range(lanes):
            idx = builder.add(args[5], builder.mul(args[6], ir.Constant(args[6].type, r)))
            ptr = cgutils.get_item_pointer(context, builder, srcty, src, [idx], wraparound=False)
            rows.append(builder.load(builder.bitcast(ptr, vec_type.as_pointer()), align=size))
        for base, vectors in ((args[1], rows), (args[2], _transpose(builder, rows))):
            for q, vec in enumerate(vectors):
                address = builder.add(base, builder.mul(args[3], ir.Constant(args[3].type, q)))
                _nontemporal_store(builder, vec, builder.inttoptr(address, vec_type.as_pointer()), 64)
        return context.get_dummy_value()

    return types.void(like, types.intp, types.intp, types.intp, src, types.intp, types.intp), codegen


@intrinsic
def _store_fence(typingctx):
    """A full fence: the non-temporal stores before it are visible to every thread after it."""

    def codegen(context, builder, signature, args):
        builder.fence("seq_cst")
        return context.get_dummy_value()

    return types.void(), codegen


@jit_inline
def stream_segment(like, address, stride, src, s0, step, count):
    """The ``count`` elements at ``address + q * stride`` = ``src[s0 + q * step]`` with
    non-temporal stores: where the elements are contiguous (``stride`` the itemsize of ``like``)
    each whole 64-byte line in one vector store, the partial lines at either end (and memory not
    aligned to the itemsize) element by element.  Inlined: no call, no reference taken."""
    itemsize = like.itemsize
    line = 64 // itemsize
    head = count
    if stride == itemsize and address % itemsize == 0:
        head = min(count, (-address % 64) // itemsize)
    for q in range(head):
        _stream_store_at(like, address + q * stride, src, s0 + q * step)
    q = head
    if step == 1:
        while q + line <= count:
            _stream_line_at(like, address + q * itemsize, src, s0 + q)
            q += line
    else:
        while q + line <= count:
            _stream_line_strided_at(like, address + q * itemsize, src, s0 + q * step, step)
            q += line
    for r in range(q, count):
        _stream_store_at(like, address + r * stride, src, s0 + r * step)


@jit
def store_strip(out, strip, i0, j0, mirror, stream):
    """``out[k, i0 + r, j0 + j] = strip[k, r, j]`` and, with ``mirror``, ``out[k, j0 + j, i0 + r]``
    too (the strip is a few rows, in L1, so the transposed reads are cheap).  ``strip`` is
    C-contiguous, of ``out``'s dtype.  With ``stream`` the stores are non-temporal, each whole
    64-byte line in one vector store (:func:`stream_segment`): the caller aligns the strip's rows
    so that each mirrored row segment fills whole lines."""
    n_out, rows, cols = strip.shape
    line = 64 // out.itemsize
    if stream:
        flat = strip.reshape(n_out * rows * cols)
        base = out.ctypes.data
        sk, si, sj = out.strides
        for k in range(n_out):
            first = k * rows * cols
            corner = base + k * sk + i0 * sj  # out[k, 0, i0]: the mirror image's rows start there
            blocks = 0
            if mirror and sj == out.itemsize and si % 64 == 0 and (corner + j0 * si) % 64 == 0:
                blocks = rows // line
            # whole blocks of a line of rows by a line of columns (the columns from the first
            # 64-byte aligned one): the upper part and the transposed mirror image from one read
            top = base + k * sk + i0 * si + j0 * sj  # out[k, i0, j0]
            head = min(cols, (-top % 64) // out.itemsize)
            for b in range(blocks):
                upper = top + b * line * si
                lower = corner + b * 64
                at = first + b * line * cols
                j = head
                while j + line <= cols:
                    _stream_block_and_mirror_at(out, upper + j * sj, lower + (j0 + j) * si, si, flat, at + j, cols)
                    j += line
                for r in range(line):  # the partial lines of the upper part
                    stream_segment(out, upper + r * si, sj, flat, at + r * cols, 1, head)
                    stream_segment(out, upper + r * si + j * sj, sj, flat, at + r * cols + j, 1, cols - j)
                for c in range(head):  # the mirror image of the columns left out
                    stream_segment(out, lower + (j0 + c) * si, sj, flat, at + c, cols, line)
                for c in range(j, cols):
                    stream_segment(out, lower + (j0 + c) * si, sj, flat, at + c, cols, line)
            # the rest, line by line where whole (strips not aligned to lines, no mirror image)
            done = blocks * line
            for r in range(done, rows):
                stream_segment(out, top + r * si, sj, flat, first + r * cols, 1, cols)
            for c in range(cols if mirror and done < rows else 0):
                stream_segment(out, corner + done * sj + (j0 + c) * si, sj, flat, first + done * cols + c, cols,
                               rows - done)  # fmt: skip
        return
    for k in range(n_out):
        dst = out[k]
        src = strip[k]
        for r in range(rows):
            row = dst[i0 + r]
            vals = src[r]
            for j in range(cols):
                row[j0 + j] = vals[j]
        if mirror:
            for j in range(cols):
                row = dst[j0 + j]
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
