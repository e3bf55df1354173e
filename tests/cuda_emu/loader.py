"""Build and load emulated CUDA modules: the exact source the GPU backend hands NVRTC, compiled
for the host with g++ once per source (cached under ``tests/cuda_emu/.build/`` by hash), with a
``RawModule``-like interface (``get_function(name_expression)(grid, block, args)``).

Every launch checks each argument against the C type of its parameter as compiled (kind and
``sizeof``, and the element type of pointers), because a host-side launcher otherwise reads the
arguments by the C++ signature and would hide a width mismatch that CuPy would not.
"""

from __future__ import annotations

import contextlib
import ctypes
import hashlib
import itertools
import os
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
BUILD = HERE / ".build"
CXX = os.environ.get("NTK_EMU_CXX", "/usr/bin/g++" if Path("/usr/bin/g++").exists() else (shutil.which("g++") or ""))
CXXFLAGS = ["-std=c++17", "-O1", "-g", "-fPIC", "-shared", "-pthread", "-Wall", "-Wno-unknown-pragmas"]
SANITIZERS = {
    "": [],
    "address": ["-fsanitize=address", "-fno-omit-frame-pointer"],
    "thread": ["-fsanitize=thread"],
}
ORDERS = ("forward", "reverse", "shuffled")  # of the blocks of a grid
SCHEDULES = ("forward", "reverse", "concurrent")  # of the threads of a block (see cuda_emu.h)


class EmulatedLaunchError(RuntimeError):
    """A kernel launch the emulator refused or stopped (barrier mismatch, bad argument, ...)."""


def available() -> bool:
    return bool(CXX) and Path(CXX).exists()


def sanitizer() -> str:
    """The sanitizer the modules are built with: ``NTK_EMU_SANITIZE`` ("", "address", "thread")."""
    s = os.environ.get("NTK_EMU_SANITIZE", "")
    if s not in SANITIZERS:
        raise ValueError(f"NTK_EMU_SANITIZE: expected one of {sorted(SANITIZERS)}, got {s!r}")
    return s


def _instances(expressions) -> str:
    return "".join(f'NTK_EMU_KERNEL("{e}", {e})\n' for e in expressions)


def build(code: str, expressions, extra_flags=()) -> Path:
    """The shared library of ``code`` (CUDA source text) with ``expressions`` instantiated."""
    if not available():
        raise RuntimeError("the CUDA emulation needs g++ (/usr/bin/g++)")
    flags = [*CXXFLAGS, *SANITIZERS[sanitizer()], *extra_flags]
    instances = _instances(sorted(set(expressions)))
    key = hashlib.sha256()
    for part in (code, instances, " ".join(flags), CXX, *(p.read_text() for p in sorted(HERE.glob("*.[hc]*")))):
        key.update(part.encode() + b"\0")
    out = BUILD / key.hexdigest()[:20]
    lib = out / "module.so"
    if lib.exists():
        return lib
    out.mkdir(parents=True, exist_ok=True)
    (out / "source.cu").write_text(code)
    (out / "instances.inc").write_text(instances)
    fd, tmp = tempfile.mkstemp(suffix=".so", dir=out)
    os.close(fd)
    cmd = [CXX, *flags, f"-I{HERE}", f'-DNTK_EMU_SOURCE="{out / "source.cu"}"',
           f'-DNTK_EMU_INSTANCES="{out / "instances.inc"}"', str(HERE / "module.cpp"), "-o", tmp]  # fmt: skip
    res = subprocess.run(cmd, capture_output=True, text=True)
    if res.returncode != 0:
        os.unlink(tmp)
        raise RuntimeError(f"g++ failed to build the emulated module:\n{res.stderr[-4000:]}")
    os.replace(tmp, lib)  # atomic: a concurrent session sees the whole library or none
    return lib


_SHARED_DECL = re.compile(r"__shared__\s+[\w:<>]+\s+(\w+)\s*\[")
# function-local statics (the __shared__ variables) outside the emulator and the C++ library
_LOCAL_STATIC = re.compile(r"^([0-9a-f]+) ([0-9a-f]+) [bBdDu] ((?!ntk_emu::|std::|__gnu)\S.*\)::(\w+))$")

# block order of the next launches: cycles through ORDERS unless pinned by block_order()
_order_cycle = itertools.count()
_pinned_order: list[str] = []


@contextlib.contextmanager
def block_order(order: str):
    """Run every launch inside the block with its blocks in ``order`` (one of ORDERS)."""
    assert order in ORDERS
    _pinned_order.append(order)
    try:
        yield
    finally:
        _pinned_order.pop()


def schedule() -> str:
    """How the threads of a block run: ``NTK_EMU_THREADS`` ("serial", the default: one at a time,
    forward and reverse order in turn; "concurrent": all at once, for ThreadSanitizer)."""
    s = os.environ.get("NTK_EMU_THREADS", "serial")
    if s not in ("serial", "concurrent"):
        raise ValueError(f"NTK_EMU_THREADS: expected 'serial' or 'concurrent', got {s!r}")
    return s


def _next_order() -> tuple[int, int, int]:
    """(block order, thread schedule, seed) of the next launch."""
    t = next(_order_cycle)
    order = _pinned_order[-1] if _pinned_order else ORDERS[t % 3]
    threads = "concurrent" if schedule() == "concurrent" else SCHEDULES[(t // 3) % 2]
    return ORDERS.index(order), SCHEDULES.index(threads), t


class Library:
    """One loaded emulated module: its kernels by name expression, their compiled parameters."""

    def __init__(self, path: Path, code: str):
        self.path = path
        lib = ctypes.CDLL(str(path))
        lib.ntk_emu_name.restype = ctypes.c_char_p
        lib.ntk_emu_launch.argtypes = [ctypes.c_int, ctypes.POINTER(ctypes.c_uint), ctypes.POINTER(ctypes.c_uint),
                                       ctypes.POINTER(ctypes.c_void_p), ctypes.c_int, ctypes.c_int, ctypes.c_ulonglong,
                                       ctypes.c_char_p, ctypes.c_int]  # fmt: skip
        self.lib = lib
        self.index = {}
        self.params = {}
        for i in range(lib.ntk_emu_count()):
            name = lib.ntk_emu_name(i).decode()
            self.index[name] = i
            desc = (ctypes.c_int * 4)()
            ps = []
            for j in range(lib.ntk_emu_nparams(i)):
                lib.ntk_emu_param(i, j, desc)
                ps.append((chr(desc[0]), desc[1], desc[2], bool(desc[3])))
            self.params[name] = ps
        self.shared = self._register_shared(code)

    def _register_shared(self, code: str) -> dict:
        """Find the __shared__ variables (function-local statics) in the
        symbol table and register them for poisoning; check that every declared one was found."""
        res = subprocess.run(["nm", "-S", "-C", "--defined-only", str(self.path)], capture_output=True, text=True,
                             check=True)  # fmt: skip
        anchor = next(
            int(line.split()[0], 16) for line in res.stdout.splitlines() if line.endswith(" ntk_emu_count")
        )  # fmt: skip
        base = ctypes.cast(self.lib.ntk_emu_count, ctypes.c_void_p).value - anchor
        found = {}
        for line in res.stdout.splitlines():
            m = _LOCAL_STATIC.match(line)
            if m and not m.group(3).startswith("guard variable"):
                found.setdefault(m.group(4), []).append((base + int(m.group(1), 16), int(m.group(2), 16)))
        declared = set(_SHARED_DECL.findall(code))
        if not declared <= set(found) or set(found) - declared:
            raise RuntimeError(f"__shared__ variables {sorted(declared)} vs function statics found {sorted(found)}")
        regions = [r for rs in found.values() for r in rs]
        addr = (ctypes.c_ulonglong * len(regions))(*[a for a, _ in regions])
        size = (ctypes.c_ulonglong * len(regions))(*[s for _, s in regions])
        self.lib.ntk_emu_set_shared(addr, size, len(regions))
        return found


# C kind and width of what CuPy passes for each argument type it accepts
def _describe(arg, is_device_array):
    if is_device_array(arg):
        return ("p", 8, arg.dtype.itemsize, arg.dtype.kind == "f"), ctypes.c_uint64(arg.ctypes.data)
    if isinstance(arg, np.generic):
        dt = arg.dtype
        if dt == np.uint64:  # a pointer passed by value (null, or a raw address)
            return ("p", 8, None, None), ctypes.c_uint64(int(arg))
        kind = {"i": "i", "u": "i", "f": "f", "b": "i"}.get(dt.kind)
        if kind is None:
            raise EmulatedLaunchError(f"CuPy cannot pass a {dt} scalar to a kernel")
        return (kind, dt.itemsize, 0, False), ctypes.create_string_buffer(arg.tobytes(), dt.itemsize)
    if isinstance(arg, bool):
        return ("i", 1, 0, False), ctypes.c_bool(arg)
    if isinstance(arg, int):  # CuPy packs a Python int as a 64-bit integer
        return ("i", 8, 0, False), ctypes.c_int64(arg)
    if isinstance(arg, float):
        return ("f", 8, 0, False), ctypes.c_double(arg)
    raise EmulatedLaunchError(f"unsupported kernel argument {type(arg).__name__}")


class Kernel:
    def __init__(self, library: Library, name: str, is_device_array, after_launch):
        self.library, self.name = library, name
        self.i = library.index[name]
        self.params = library.params[name]
        self.is_device_array = is_device_array
        self.after_launch = after_launch

    def __call__(self, grid, block, args, shared_mem=0):
        if len(args) != len(self.params):
            raise EmulatedLaunchError(f"{self.name}: {len(args)} arguments for {len(self.params)} parameters")
        keep = []
        ptrs = (ctypes.c_void_p * len(args))()
        for q, (arg, param) in enumerate(zip(args, self.params)):
            got, buf = _describe(arg, self.is_device_array)
            kind, size, pointee, pointee_float = param
            ok = got[0] == kind and got[1] == size
            if ok and kind == "p" and got[2] is not None:
                ok = got[2] == pointee and got[3] == pointee_float
            if not ok:
                raise EmulatedLaunchError(
                    f"{self.name}: argument {q} is {got} (kind, bytes, element bytes, float) but the "
                    f"compiled parameter is {param}"
                )
            keep.append(buf)
            ptrs[q] = ctypes.addressof(buf)
        g = (ctypes.c_uint * 3)(*[int(v) for v in (tuple(grid) + (1, 1))[:3]])
        b = (ctypes.c_uint * 3)(*[int(v) for v in (tuple(block) + (1, 1))[:3]])
        order, threads, seed = _next_order()
        err = ctypes.create_string_buffer(4096)
        if self.library.lib.ntk_emu_launch(self.i, g, b, ptrs, order, threads, seed, err, len(err)):
            raise EmulatedLaunchError(f"{self.name}: {err.value.decode()}")
        self.after_launch(self.name)


_LIBRARIES: dict[Path, Library] = {}


def load(code: str, expressions) -> Library:
    """The loaded library of ``code`` with (at least) ``expressions``; built at most once."""
    path = build(code, expressions)
    if path not in _LIBRARIES:
        _LIBRARIES[path] = Library(path, code)
    return _LIBRARIES[path]


def all_codes() -> list[int]:
    """Every activation code of the closed forms in ntkfast.spec."""
    from ntkfast import spec

    return [spec.ABRELU, spec.ERF, spec.GELU, spec.SIN, spec.SIGN, spec.EXP, spec.GAUSSIAN,
            *(spec.RECTIFIED_MONOMIAL + n for n in range(spec.MAX_RECTIFIED_DEGREE + 1)),
            *(spec.MONOMIAL + n for n in range(spec.MAX_MONOMIAL_DEGREE + 1))]  # fmt: skip


def session_expressions(code: str, wanted) -> list[str]:
    """What to build for a module asking for ``wanted``: every code's kernels in both dtypes
    (one library for the whole test session), plus ``wanted`` if it asks for something else.
    A source other than the backend's gets ``wanted`` only."""
    from ntkfast.backends import gpu

    if code != gpu.load_source() or sanitizer():  # (a sanitized build: only what is used)
        return sorted(set(wanted))
    from ntkfast import spec

    codes = [*all_codes(), spec.SERIES]  # (the Hermite-series activations share one code)
    every = {e for c in codes for dt in ("float32", "float64") for e in gpu.name_expressions(c, dt)}
    return sorted(every | set(wanted))
