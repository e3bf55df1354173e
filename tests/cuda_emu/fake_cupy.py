"""A ``cupy`` (and ``cupyx``) module for the CPU: device arrays are NumPy arrays, ``RawModule``
compiles and runs the real CUDA source with the host emulation (:mod:`.loader`).

What it checks on the way, so that host-code mistakes show as they would on a GPU (or worse):

* device allocations (``empty``, ``asarray`` copies, pinned buffers) are filled with NaN, and
  padded with NaN guard zones that are checked after every launch (an out-of-bounds write);
* ``asarray`` of a host array copies it (device memory never aliases host memory), and NumPy
  ufuncs (``@``, ``+`` ...) refuse to mix a device array with a host array, as CuPy does;
* ``memcpyAsync`` copies only within one device allocation and one pinned buffer;
* a stream waits only on a recorded event, an event is synchronised only once recorded.

Everything runs synchronously on one stream: ordering bugs between streams do not show.
"""

from __future__ import annotations

import ctypes
import types
import weakref

import numpy as np

from . import loader

GUARD = 64  # elements of NaN before and after every device allocation

_allocations: list = []  # (weakref to the buffer, first element, end element, kind)


def _poison(dtype):
    dtype = np.dtype(dtype)
    return np.nan if dtype.kind in "fc" else (np.iinfo(dtype).max if dtype.kind in "iu" else 0)


class ndarray(np.ndarray):  # noqa: N801 (CuPy's name)
    """A "device" array: NumPy memory with CuPy's ``get``, ``data.ptr`` and mixing rules."""

    def get(self):
        return np.array(self)

    @property
    def data(self):
        return types.SimpleNamespace(ptr=self.ctypes.data)

    def __array_ufunc__(self, ufunc, method, *inputs, **kwargs):
        operands = list(inputs) + list(kwargs.get("out", ()))
        for a in operands:
            if isinstance(a, np.ndarray) and not isinstance(a, ndarray) and a.ndim > 0:
                raise TypeError(f"{ufunc.__name__}: a device array cannot be mixed with a NumPy array (as in CuPy)")
        inputs = [a.view(np.ndarray) if isinstance(a, ndarray) else a for a in inputs]
        if "out" in kwargs:
            kwargs["out"] = tuple(o.view(np.ndarray) for o in kwargs["out"])
        res = getattr(ufunc, method)(*inputs, **kwargs)
        if "out" in kwargs:
            outs = tuple(o for o in operands[len(inputs) :])
            return outs[0] if len(outs) == 1 else outs
        if isinstance(res, np.ndarray):
            return _to_device(res)
        return res


def _allocate(shape, dtype, kind="device"):
    dtype = np.dtype(dtype)
    shape = (shape,) if np.isscalar(shape) else tuple(shape)
    size = int(np.prod(shape, dtype=np.int64))
    buf = np.full(size + 2 * GUARD, _poison(dtype), dtype)
    _allocations.append((weakref.ref(buf), buf.ctypes.data, buf.ctypes.data + buf.nbytes, dtype, kind))
    a = buf[GUARD : GUARD + size].reshape(shape)
    return a.view(ndarray) if kind == "device" else a


def _to_device(a):
    out = _allocate(a.shape, a.dtype)
    out.view(np.ndarray)[...] = a
    return out


def check_guards(after="") -> None:
    """Every guard zone of every live allocation still NaN (nothing written out of bounds)."""
    live = []
    for ref, start, end, dtype, kind in _allocations:
        buf = ref()
        if buf is None:
            continue
        live.append((ref, start, end, dtype, kind))
        for zone in (buf[:GUARD], buf[-GUARD:]):
            if not np.array_equal(zone, np.full(GUARD, _poison(dtype), dtype), equal_nan=dtype.kind in "fc"):
                raise loader.EmulatedLaunchError(f"out-of-bounds write into a {kind} allocation {after}")
    _allocations[:] = live


def _owner(ptr, size, kind):
    for ref, start, end, _dtype, k in _allocations:
        buf = ref()
        if buf is not None and k == kind:
            lo, hi = start + GUARD * buf.itemsize, end - GUARD * buf.itemsize
            if lo <= ptr and ptr + size <= hi:
                return buf
    raise loader.EmulatedLaunchError(f"memcpy of {size} bytes at {ptr:#x} is not inside one {kind} allocation")


def asarray(a, dtype=None):
    if isinstance(a, ndarray) and (dtype is None or a.dtype == np.dtype(dtype)):
        return a
    return _to_device(np.asarray(a, dtype=dtype))


def empty(shape, dtype=float):
    return _allocate(shape, dtype)


def zeros(shape, dtype=float):
    a = _allocate(shape, dtype)
    a.view(np.ndarray)[...] = 0
    return a


def full(shape, value, dtype=float):
    a = _allocate(shape, dtype)
    a.view(np.ndarray)[...] = value
    return a


def matmul(a, b, out=None):
    for x in (a, b) + (() if out is None else (out,)):
        if not isinstance(x, ndarray):
            raise TypeError(f"matmul: expected device arrays, got {type(x).__name__}")
    if out is None:
        return _to_device(np.matmul(a.view(np.ndarray), b.view(np.ndarray)))
    np.matmul(a.view(np.ndarray), b.view(np.ndarray), out=out.view(np.ndarray))
    return out


class RawModule:
    """``cupy.RawModule(code=..., options=..., name_expressions=...)`` on the emulator."""

    def __init__(self, code, options=(), name_expressions=()):
        if '#include "' in code:
            raise loader.EmulatedLaunchError("the module source still #includes a file (NVRTC has no file system)")
        self.options = tuple(options)
        self.names = list(name_expressions)
        self.library = loader.load(code, loader.session_expressions(code, self.names))

    def get_function(self, name):
        if name not in self.names:
            raise KeyError(f"{name} is not one of this module's name_expressions")
        return loader.Kernel(self.library, name, lambda a: isinstance(a, ndarray), _after_launch)


def _after_launch(name):
    check_guards(f"after {name}")


class Stream:
    def __init__(self, non_blocking=False):
        self.ptr = id(self)

    def synchronize(self):
        pass

    def wait_event(self, event):
        if not event.recorded:
            raise RuntimeError("wait_event on an event that was never recorded")


_current = Stream()


class Event:
    def __init__(self):
        self.recorded = False

    def record(self, stream=None):
        self.recorded = True

    def synchronize(self):
        if not self.recorded:
            raise RuntimeError("synchronize on an event that was never recorded")


class Device:
    attributes = {"MultiProcessorCount": 2}

    def __init__(self, device=0):
        if device != 0:
            raise RuntimeError(f"no device {device}")
        self.id = 0

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


MEMCPY_D2H = 2


def _memcpy(dst, src, size, kind, stream):
    if kind != MEMCPY_D2H:
        raise RuntimeError(f"memcpy kind {kind}: the backend only copies device to host")
    _owner(dst, size, "pinned")
    _owner(src, size, "device")
    ctypes.memmove(dst, src, size)


def modules() -> dict:
    """``{"cupy": ..., "cupyx": ..., "cupyx.profiler": ...}`` to put into ``sys.modules``."""
    runtime = types.SimpleNamespace(
        getDeviceCount=lambda: 1, memGetInfo=lambda: (2**30, 2**31), memcpyAsync=_memcpy, memcpyDeviceToHost=MEMCPY_D2H
    )
    cuda = types.SimpleNamespace(runtime=runtime, Device=Device, Stream=Stream, Event=Event,
                                 get_current_stream=lambda: _current)  # fmt: skip
    cp = types.ModuleType("cupy")
    cp.__dict__.update(
        ndarray=ndarray, asarray=asarray, matmul=matmul, cuda=cuda, nan=np.nan, RawModule=RawModule,
        empty=empty, zeros=zeros, full=full, float32=np.float32, float64=np.float64,
        get_default_memory_pool=lambda: types.SimpleNamespace(free_bytes=lambda: 0),
    )  # fmt: skip
    cpx = types.ModuleType("cupyx")
    cpx.empty_pinned = lambda shape, dtype=float: _allocate(shape, dtype, kind="pinned")
    profiler = types.ModuleType("cupyx.profiler")

    def benchmark(f, n_repeat=1, n_warmup=0):
        for _ in range(n_warmup + n_repeat):
            f()
        return types.SimpleNamespace(gpu_times=np.ones((1, n_repeat)))

    profiler.benchmark = benchmark
    cpx.profiler = profiler
    return {"cupy": cp, "cupyx": cpx, "cupyx.profiler": profiler}
