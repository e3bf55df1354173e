// The host translation unit of one emulated module: the CUDA source exactly as the GPU backend
// hands it to NVRTC (gram.cu with recursion.cuh inlined, written by the loader to
// NTK_EMU_SOURCE), then one registration per name expression (NTK_EMU_INSTANCES).
#include <cstdio>

#include "cuda_emu.h"
#include NTK_EMU_SOURCE
#include "launch.h"
#include NTK_EMU_INSTANCES
