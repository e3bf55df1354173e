"""Experiments built on the library, for the notebooks and the benchmarks (not part of the core API).

:func:`fourier_feature_spectra` compares the NTK spectrum of a plain ReLU MLP with the spectra
after random Fourier features of several scales (Tancik et al. 2020), the experiment of
``notebooks/03_spectrum_and_convergence.ipynb``.
"""

from __future__ import annotations

import numpy as np

from ._validation import check_lapack_size, check_nonnegative_int, check_positive_float, check_positive_int
from .errors import ArgumentError, ArgumentTypeError
from .gram import kernel
from .spec import MLP, RandomFourierFeatures
from .spectrum import SpectrumResult, analyze

__all__ = ["fourier_feature_spectra"]


def fourier_feature_spectra(
    n: int = 256, scales=(1.0, 4.0, 16.0), depth: int = 3, n_features: int = 256, dim: int = 1, seed: int = 0
) -> dict[object, SpectrumResult]:
    """NTK spectra of a ReLU MLP on a regular grid in [0, 1)^dim, plain and after random Fourier
    features of several scales (Tancik et al. 2020): larger scales make the spectrum fall off
    more slowly, so high frequencies are learned sooner.

    Parameters
    ----------
    n : int, default=256
        Grid points (``round(n^(1/dim))`` per axis, at least 2).
    scales : sequence of float, default=(1.0, 4.0, 16.0)
        Scales of the random Fourier features (each > 0).
    depth : int, default=3
    n_features : int, default=256
        Random Fourier features per map.
    dim : int, default=1
    seed : int, default=0
        Seed of the Fourier features.

    Returns
    -------
    dict
        ``{"plain": SpectrumResult, scale: SpectrumResult, ...}``.

    Examples
    --------
    >>> res = fourier_feature_spectra(n=32, scales=(4.0,), depth=1, n_features=16)
    >>> sorted(res, key=str), res["plain"].eigenvalues.shape
    ([4.0, 'plain'], (32,))
    """
    n = check_positive_int(n, "n", allow_none=False)
    depth = check_positive_int(depth, "depth", allow_none=False)
    n_features = check_positive_int(n_features, "n_features", allow_none=False)
    dim = check_positive_int(dim, "dim", allow_none=False)
    seed = check_nonnegative_int(seed, "seed")
    if isinstance(scales, (str, bytes)) or not hasattr(scales, "__iter__"):
        raise ArgumentTypeError(f"scales: expected a sequence of numbers > 0, got {scales!r}")
    scales = [check_positive_float(s, "scales") for s in scales]
    side = int(round(n ** (1.0 / dim)))
    if side < 2:
        raise ArgumentError(f"n: {n} points in {dim} dimensions leave fewer than 2 grid points per axis; raise n")
    # refused before the n x n kernels are computed, not after
    check_lapack_size(side**dim, "n", "use fewer grid points (the spectra are dense eigendecompositions)")
    grid = np.stack(np.meshgrid(*[np.arange(side) / side] * dim, indexing="ij"), -1).reshape(-1, dim)
    out: dict[object, SpectrumResult] = {"plain": analyze(kernel(MLP(depth=depth, activation="relu", b_std=0.1), grid))}
    for s in scales:
        arch = MLP(
            depth=depth,
            activation="relu",
            b_std=0.1,
            input_map=RandomFourierFeatures(n_features, scale=s, seed=seed),
        )
        out[s] = analyze(kernel(arch, grid))
    return out
