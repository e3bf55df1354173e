// Launching emulated kernels from Python (ctypes): a registry of the instantiated kernels, the
// C type of each parameter (so the caller can check what it packs), and a launcher that takes
// the grid, the block and a cuLaunchKernel-style array of pointers to the argument values.
#pragma once

#include <tuple>
#include <type_traits>
#include <utility>

#include "cuda_emu.h"

namespace ntk_emu {

struct Param {
  int kind;  // 'p' pointer, 'i' integer, 'f' floating point
  int size;  // sizeof the parameter
  int pointee;  // pointers: sizeof the element
  int pointee_float;  // pointers: whether the element is floating point
};

using Launcher = std::function<std::string(const unsigned*, const unsigned*, void**, int, int, unsigned long long)>;

struct Entry {
  const char* name;
  std::vector<Param> params;
  Launcher launch;
};

inline std::vector<Entry>& registry() {
  static std::vector<Entry> r;
  return r;
}

template <typename A>
Param describe() {
  using D = std::decay_t<A>;
  if constexpr (std::is_pointer_v<D>) {
    using E = std::remove_cv_t<std::remove_pointer_t<D>>;
    return {'p', int(sizeof(D)), int(sizeof(E)), int(std::is_floating_point_v<E>)};
  } else {
    return {std::is_floating_point_v<D> ? 'f' : 'i', int(sizeof(D)), 0, 0};
  }
}

inline std::string check_geometry(const uint3& g, const uint3& b) {
  const unsigned long long threads = 1ull * b.x * b.y * b.z;
  if (!g.x || !g.y || !g.z || !b.x || !b.y || !b.z) return "empty grid or block";
  if (threads > 1024 || b.z > 64) return "more than 1024 threads per block (or blockDim.z > 64)";
  if (g.y > 65535 || g.z > 65535 || g.x > 2147483647u) return "grid beyond CUDA's limits";
  return "";
}

inline std::mutex& launch_mutex() {
  static std::mutex m;
  return m;
}

template <typename... A, size_t... I>
std::string launch(void (*kernel)(A...), std::index_sequence<I...>, const unsigned* g, const unsigned* b,
                   void** params, int order, int schedule, unsigned long long seed) {
  const std::tuple<std::decay_t<A>...> values{*static_cast<std::decay_t<A>*>(params[I])...};
  const uint3 grid{g[0], g[1], g[2]}, block{b[0], b[1], b[2]};
  std::string err = check_geometry(grid, block);
  if (!err.empty()) return err;
  std::lock_guard<std::mutex> lk(launch_mutex());
  const unsigned long long n_blocks = 1ull * grid.x * grid.y * grid.z;
  std::vector<unsigned long long> ids(n_blocks);
  std::iota(ids.begin(), ids.end(), 0ull);
  if (order == 1) std::reverse(ids.begin(), ids.end());
  if (order == 2) {
    std::mt19937_64 gen(seed);
    std::shuffle(ids.begin(), ids.end(), gen);
  }
  Pool& p = pool(int(block.x * block.y * block.z));
  const std::function<void()> job = [&] { std::apply(kernel, values); };  // by-value copies per thread
  gridDim = grid;
  blockDim = block;
  for (unsigned long long id : ids) {
    blockIdx = {unsigned(id % grid.x), unsigned(id / grid.x % grid.y), unsigned(id / (1ull * grid.x * grid.y))};
    poison_shared();
    err = p.run_block(block, job, schedule);
    if (!err.empty())
      return err + " (block " + std::to_string(blockIdx.x) + "," + std::to_string(blockIdx.y) + "," +
             std::to_string(blockIdx.z) + ")";
  }
  return "";
}

template <typename... A>
int add(const char* name, void (*kernel)(A...)) {
  Launcher l = [kernel](const unsigned* g, const unsigned* b, void** params, int order, int schedule,
                        unsigned long long seed) {
    return launch(kernel, std::index_sequence_for<A...>{}, g, b, params, order, schedule, seed);
  };
  registry().push_back({name, {describe<A>()...}, l});
  return 0;
}

}  // namespace ntk_emu

#define NTK_EMU_CAT2(a, b) a##b
#define NTK_EMU_CAT(a, b) NTK_EMU_CAT2(a, b)
// NTK_EMU_KERNEL("ntkfast::gram_fused<1, double>", ntkfast::gram_fused<1, double>)
#define NTK_EMU_KERNEL(name, ...) static const int NTK_EMU_CAT(ntk_emu_reg_, __COUNTER__) = ntk_emu::add(name, &__VA_ARGS__);

extern "C" {
int ntk_emu_count() { return int(ntk_emu::registry().size()); }
const char* ntk_emu_name(int i) { return ntk_emu::registry()[i].name; }
int ntk_emu_nparams(int i) { return int(ntk_emu::registry()[i].params.size()); }
void ntk_emu_param(int i, int j, int* out) {
  const ntk_emu::Param& p = ntk_emu::registry()[i].params[j];
  out[0] = p.kind;
  out[1] = p.size;
  out[2] = p.pointee;
  out[3] = p.pointee_float;
}
// Registers the __shared__ variables: n (address, bytes) pairs.
void ntk_emu_set_shared(const unsigned long long* addresses, const unsigned long long* sizes, int n) {
  std::lock_guard<std::mutex> lk(ntk_emu::launch_mutex());
  ntk_emu::shared_regions().clear();
  for (int q = 0; q < n; ++q)
    ntk_emu::shared_regions().emplace_back(reinterpret_cast<char*>(addresses[q]), size_t(sizes[q]));
}
// 0 on success; otherwise the error (file:line of a barrier mismatch, ...) in err.  order: blocks
// forward (0), reverse (1) or shuffled by seed (2); schedule: threads of a block one at a time in
// forward (0) or reverse (1) order, or all at once (2).
int ntk_emu_launch(int i, const unsigned* grid, const unsigned* block, void** params, int order, int schedule,
                   unsigned long long seed, char* err, int errlen) {
  std::string e;
  try {
    e = ntk_emu::registry()[i].launch(grid, block, params, order, schedule, seed);
  } catch (const std::exception& x) {
    e = std::string("launcher: ") + x.what();
  }
  if (e.empty()) return 0;
  std::snprintf(err, size_t(errlen), "%s", e.c_str());
  return 1;
}
}
