"""Host emulation of the CUDA kernels of ``ntkfast/backends/cuda/gram.cu`` (see README.md).

:mod:`.loader` compiles the real source with g++ against ``cuda_emu.h`` and launches its kernels
through ctypes; :mod:`.fake_cupy` is a ``cupy`` module whose arrays are NumPy arrays and whose
``RawModule`` is the emulator, so the GPU backend's host code runs unchanged on the CPU.
"""
