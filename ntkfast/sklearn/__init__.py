"""scikit-learn estimators on the infinite-width kernels and the kernels themselves.

- :class:`NTKRegressor`, :class:`NTKClassifier`: kernel regression / classification with the NTK
  or NNGP of one architecture (``_estimators``).
- :class:`NTKRegressorCV`, :class:`NTKClassifierCV`: the same with depth and ridge (and
  optionally W_std, b_std) chosen by exact closed-form leave-one-out (``_cv``).
- :class:`NTKKernel`, :class:`NNGPKernel`: Gaussian-process kernels with W_std and b_std as
  hyper-parameters (``_kernels``).
"""

from ._common import DIAG_REGS
from ._cv import CV_B_STD, CV_DIAG_REGS, DEPTHS, NTKClassifierCV, NTKRegressorCV
from ._estimators import NTKClassifier, NTKRegressor
from ._kernels import NNGPKernel, NTKKernel

__all__ = [
    "NTKRegressor",
    "NTKClassifier",
    "NTKRegressorCV",
    "NTKClassifierCV",
    "NTKKernel",
    "NNGPKernel",
    "DIAG_REGS",
    "DEPTHS",
    "CV_DIAG_REGS",
    "CV_B_STD",
]
