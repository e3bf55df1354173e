"""CuPy, imported only when the GPU is asked for, and the device it sees."""

from __future__ import annotations

import sys

from ...errors import NtkfastError

INSTALL = "pip install ntkfast[gpu]"


class DeviceUnavailableError(NtkfastError, RuntimeError):
    """CuPy is installed but sees no usable CUDA device."""


def import_cupy():
    """The cupy module, or an ImportError that says how to install it."""
    try:
        import cupy
    except ImportError as exc:
        raise ImportError(
            f"the GPU backend needs CuPy, which is not installed: install it with `{INSTALL}` "
            "(CUDA 12), or use backend='cpu'"
        ) from exc
    return cupy


def require():
    """The cupy module, checked to see a CUDA device; a clear error otherwise."""
    cupy = import_cupy()
    try:
        count = cupy.cuda.runtime.getDeviceCount()
    except Exception as exc:  # CUDARuntimeError: no driver, no device
        raise DeviceUnavailableError(f"the GPU backend found no usable CUDA device ({exc}); use backend='cpu'") from exc
    if count < 1:
        raise DeviceUnavailableError("the GPU backend found no CUDA device; use backend='cpu'")
    return cupy


def available() -> bool:
    """Whether CuPy is installed and sees a CUDA device."""
    try:
        require()
    except (ImportError, RuntimeError):
        return False
    return True


def is_device_array(a) -> bool:
    """Whether ``a`` is a ``cupy.ndarray`` (False without CuPy imported)."""
    cupy = sys.modules.get("cupy")
    return cupy is not None and isinstance(a, cupy.ndarray)


def to_host(a):
    """A NumPy view of ``a`` (a CuPy array is copied to the host; anything else is returned as is)."""
    return a.get() if is_device_array(a) else a


def device_budget(cupy) -> int:
    """Bytes of device memory the backend may use: half of what is free (pool included)."""
    free, _ = cupy.cuda.runtime.memGetInfo()
    return (free + cupy.get_default_memory_pool().free_bytes()) // 2
