// Tiled NNGP/NTK Gram kernels of the GPU backend (host side: ntkfast/backends/gpu.py, which loads
// this file with cupy.RawModule, recursion.cuh inlined, and instantiates the templates by
// name_expressions).  The activation code is a template parameter so that the dispatch of
// recursion.cuh folds away, as in the Numba backend.
//
//  * recursion_tile: inner products from cuBLAS (a GEMM into `gram`, done by the host), then one
//    thread per entry runs the fused recursion over all layers in registers.
//  * gram_fused: the same, with the inner products computed in the kernel (shared-memory tiles,
//    4 x 4 entries per thread in registers): the hand-tiled alternative to cuBLAS + elementwise.
//  * matvec_fused: matrix-free K @ V.  A block owns a row tile and a slice of the column tiles;
//    for each tile it computes the kernel values as gram_fused does, multiplies them by the rows
//    of V and accumulates into its own slice of `partial` (n_slices, n, k).  sum_slices then
//    adds the slices in a fixed order: no atomics, so the result is bitwise reproducible.
//
// Kernel parameters are plain pointers and scalars (CuPy passes no structs); their order and C
// types are mirrored in ntkfast/backends/gpu/args.py (PARAMS; tests/test_gpu.py checks the match).
//
// Conventions shared by the kernels:
//  * `coef` = [p0, p1, p2, w, b, alpha, beta, n_steps x (res, W^2, b^2, alpha, beta)]: the
//    activation's parameters, Sigma_1 = w <x,y> + b, Theta_1 = alpha <x,y> + beta, then the steps
//    of ntkfast.recursion.step.
//  * sig_x (n_steps rows, leading dimension ld_sx) holds Sigma(x, x) entering each step for the
//    tile's rows, sig_y the same for its columns.
//  * `diagonal`: the tile sits on the diagonal of a symmetric Gram (rows == columns).  Entries
//    below the diagonal are not computed, entry (i, i) takes the exact diagonal (diag_nngp,
//    diag_ntk), and every other entry is also written to its mirror image.
//  * Outputs: nngp / ntk (either may be null) at (i, j) with leading dimension ld_out; when
//    nngp_t / ntk_t are non-null, also at (j, i) of those (leading dimension ld_t): the lower
//    triangle of a symmetric Gram.
//  * float32 refinement (`refine` != 0): pairs whose first-layer 1 - rho^2 is <= tau are
//    recomputed in float64 from x64 / y64 (d features), sig_x64 / sig_y64 and coef64, as the CPU
//    backend does (ntkfast.config.REFINE_TOL32).
//  * Hermite-series activations (CODE == SERIES; ntkfast/series.py, ntkfast/backends/cpu_series.py):
//    no closed form; per row and layer the host computes the coefficients c_k, d_k of phi and
//    phi' and 1/sqrt(Sigma(x, x)).  cx / dx hold them coefficient-major, row (layer * n_coef + k)
//    of leading dimension ld_sx (the rows of the tile contiguous, like sig_x), inv_x row `layer`;
//    cy, dy, inv_y the same for the columns (ld_sy).  `table` (n_steps x n_bins, int) is the
//    degree per layer and |rho| bin (ntkfast.series.degree_table, bins of rho_steps per halving
//    of 1 - |rho|).  Null / 0 for the closed forms.  No float64 refinement (refine is 0): the
//    polynomial in rho is smooth at rho = 1.
//  * ELU/SELU (series.exact_args): `cut` (n_steps, T) is per layer the |rho| above which a pair
//    leaves the series, `exact` (5 doubles) [flag, alpha, scale, vmin, vmax]; with flag 1 such a
//    pair whose two variances (1 / inv^2) lie in [vmin, vmax] takes scale^2 (K, Kdot) of
//    bivariate::elu_dual (bivariate.cuh, in float64) instead of the series: the pairs, the cut and
//    the parameters of cpu_series.tile.  Null for the closed forms.
#include "recursion.cuh"
#include "bivariate.cuh"

namespace ntkfast {

enum : int { COEF_HEAD = 7 };  // (enums: no unused-variable warning where no kernel is instantiated)
enum : int { SERIES = 64 };  // the activation code of the Hermite-series activations (ntkfast/spec.py)

template <int CODE, typename T>
__device__ inline void run_layers(const T* coef, int n_steps, T g, const T* sx, int ld_sx, const T* sy, int ld_sy,
                                  T& sigma, T& theta) {
  sigma = coef[3] * g + coef[4];
  theta = coef[5] * g + coef[6];
  for (int l = 0; l < n_steps; ++l) {
    Dual<T> kk = dual<T>(CODE, coef[0], coef[1], coef[2], sx[(size_t)l * ld_sx], sy[(size_t)l * ld_sy], sigma);
    const T* c = coef + COEF_HEAD + 5 * l;
    step<T>(kk.k, kk.kdot, sigma, theta, c[0], c[1], c[2], c[3], c[4]);
  }
}

// Everything the recursion of one entry needs; built in registers by each kernel from its parameters.
template <typename T> struct Recursion {
  const T* coef;
  int n_steps;
  const T* sig_x;
  const T* sig_y;
  int ld_sx, ld_sy;
  const T* diag_nngp;
  const T* diag_ntk;
  int diagonal;
  int refine;
  float tau;
  const double* coef64;
  const double* sig_x64;
  const double* sig_y64;
  const double* x64;
  const double* y64;
  int d;
  // Hermite-series activations (CODE == SERIES) only
  const int* table;
  int n_bins;
  int rho_steps;
  int n_coef;
  const T* cx;
  const T* dx;
  const T* inv_x;
  const T* cy;
  const T* dy;
  const T* inv_y;
  const T* cut;
  const double* exact;
};

// Degree of the series for a correlation rho at `layer`: its |rho| bin, ceil(-rho_steps log2(1 - |rho|))
// (the last bin, n_bins - 1, for |rho| = 1), looked up in the degree table; as cpu_series._degree
// does for a chunk of columns (here: for each pair; a warp pays for its largest).
template <typename T> __device__ inline int series_degree(const Recursion<T>& R, int layer, T rho) {
  const double gap = 1.0 - fabs((double)rho);
  const int last = R.n_bins - 1;
  int b = last;
  if (gap > 0.0) {
    const double v = ceil(-R.rho_steps * log2(gap));
    b = v < last ? (int)v : last;
  }
  return R.table[layer * R.n_bins + b];
}

// ELU/SELU's closed form for the pair at `layer` (see the conventions above): true, with (k, kd) =
// scale^2 (K, Kdot) of ELU(alpha) in float64 rounded to T, where exact[0] == 1, |rho| > cut[layer]
// and both variances 1 / inv^2 (in float64, from the T inverses) lie in [vmin, vmax]; the order of
// cpu_series.tile's tests and arithmetic, and its parallel tolerance (PARALLEL_TOL32 in float).
template <typename T>
__device__ inline bool elu_closed_form(const Recursion<T>& R, int layer, T ix, T iy, T rho, T sxy, T& k, T& kd) {
  if (R.exact == nullptr || R.exact[0] != 1.0 || !(fabs(rho) > R.cut[layer])) return false;
  const double vmin = R.exact[3], vmax = R.exact[4];
  const double fx = (double)ix, fy = (double)iy;
  const double sxx = ix > T(0) ? 1.0 / (fx * fx) : 0.0;
  const double syy = iy > T(0) ? 1.0 / (fy * fy) : 0.0;
  if (!(vmin <= sxx && sxx <= vmax && vmin <= syy && syy <= vmax)) return false;
  const double tol = sizeof(T) == sizeof(float) ? bivariate::PARALLEL_TOL32 : bivariate::PARALLEL_TOL64;
  const bivariate::EluDual e = bivariate::elu_dual(sxx, syy, (double)sxy, R.exact[1], tol);
  const double scale2 = R.exact[2] * R.exact[2];
  k = T(scale2 * e.k);
  kd = T(scale2 * e.kdot);
  return true;
}

// (sigma, theta) of the pair (i, j) with inner product g for a series activation: per layer,
// rho = Sigma_xy / sqrt(Sigma_xx Sigma_yy) clipped to [-1, 1], K = sum_k cx_k cy_k rho^k and
// Kdot = sum_k dx_k dy_k rho^k by Horner to the degree of rho (or ELU's closed form:
// elu_closed_form), then the step; the operations in the order of cpu_series.tile.
template <typename T> __device__ inline void series_layers(const Recursion<T>& R, int i, int j, T g, T& sigma, T& theta) {
  sigma = R.coef[3] * g + R.coef[4];
  theta = R.coef[5] * g + R.coef[6];
  const T one = T(1);
  for (int l = 0; l < R.n_steps; ++l) {
    const T ix = R.inv_x[(size_t)l * R.ld_sx + i];
    const T iy = R.inv_y[(size_t)l * R.ld_sy + j];
    const T r = sigma * ix * iy;
    const T rho = r < -one ? -one : (r > one ? one : r);
    T k = T(0), kd = T(0);
    if (!elu_closed_form<T>(R, l, ix, iy, rho, sigma, k, kd)) {
      const int degree = series_degree<T>(R, l, rho);
      const T* cx = R.cx + (size_t)l * R.n_coef * R.ld_sx + i;
      const T* dx = R.dx + (size_t)l * R.n_coef * R.ld_sx + i;
      const T* cy = R.cy + (size_t)l * R.n_coef * R.ld_sy + j;
      const T* dy = R.dy + (size_t)l * R.n_coef * R.ld_sy + j;
      for (int m = degree; m >= 0; --m) {
        k = k * rho + cx[(size_t)m * R.ld_sx] * cy[(size_t)m * R.ld_sy];
        kd = kd * rho + dx[(size_t)m * R.ld_sx] * dy[(size_t)m * R.ld_sy];
      }
    }
    const T* c = R.coef + COEF_HEAD + 5 * l;
    step<T>(k, kd, sigma, theta, c[0], c[1], c[2], c[3], c[4]);
  }
}

// entry() for the closed forms: the recursion in T, or in float64 for pairs too close to parallel.
template <int CODE, typename T>
__device__ inline void entry_closed_form(const Recursion<T>& R, int i, int j, T g, T& sigma, T& theta) {
  if (R.refine && R.n_steps > 0) {
    // 1 - rho^2 <= tau in units of the row's variance, as on the CPU (the product of two
    // variances overflows or underflows at extreme scales): y - c^2 <= tau y, y = syy/sxx, c = sxy/sxx
    const T sx = R.sig_x[i];
    const T inv = sx > T(0) ? T(1) / sx : T(0);
    const T ratio = R.sig_y[j] * inv;
    const T c = (R.coef[3] * g + R.coef[4]) * inv;
    if (ratio - c * c <= T(R.tau) * ratio) {  // too close to parallel for float32: redo in float64
      const double* x = R.x64 + (size_t)i * R.d;
      const double* y = R.y64 + (size_t)j * R.d;
      double g64 = 0.0;
      for (int q = 0; q < R.d; ++q) g64 += x[q] * y[q];
      double s64, t64;
      run_layers<CODE, double>(R.coef64, R.n_steps, g64, R.sig_x64 + i, R.ld_sx, R.sig_y64 + j, R.ld_sy, s64, t64);
      sigma = T(s64);
      theta = T(t64);
      return;
    }
  }
  run_layers<CODE, T>(R.coef, R.n_steps, g, R.sig_x + i, R.ld_sx, R.sig_y + j, R.ld_sy, sigma, theta);
}

// (sigma, theta) of the tile entry (i, j) whose inner product is g.
template <int CODE, typename T>
__device__ inline void entry(const Recursion<T>& R, int i, int j, T g, T& sigma, T& theta) {
  if (R.diagonal && i == j) {
    sigma = R.diag_nngp[i];
    theta = R.diag_ntk[i];
    return;
  }
  if constexpr (CODE == SERIES) {
    series_layers<T>(R, i, j, g, sigma, theta);
  } else {
    entry_closed_form<CODE, T>(R, i, j, g, sigma, theta);
  }
}

template <typename T>
__device__ inline void store(T* nngp, T* ntk, long long ld_out, T* nngp_t, T* ntk_t, long long ld_t, int i, int j,
                             T sigma, T theta, bool mirror) {
  if (nngp) nngp[(size_t)i * ld_out + j] = sigma;
  if (ntk) ntk[(size_t)i * ld_out + j] = theta;
  if (mirror) {
    if (nngp_t) nngp_t[(size_t)j * ld_t + i] = sigma;
    if (ntk_t) ntk_t[(size_t)j * ld_t + i] = theta;
  }
}

#define NTKFAST_RECURSION_PARAMS                                                                           \
  const T *coef, int n_steps, const T *sig_x, const T *sig_y, int ld_sx, int ld_sy, const T *diag_nngp,     \
      const T *diag_ntk, int diagonal, int refine, float tau, const double *coef64, const double *sig_x64, \
      const double *sig_y64, const double *x64, const double *y64, int d, const int *table, int n_bins,     \
      int rho_steps, int n_coef, const T *cx, const T *dx, const T *inv_x, const T *cy, const T *dy,        \
      const T *inv_y, const T *cut, const double *exact
#define NTKFAST_RECURSION_ARGS                                                                            \
  {coef, n_steps, sig_x, sig_y, ld_sx, ld_sy, diag_nngp, diag_ntk, diagonal, refine, tau, coef64, sig_x64, \
   sig_y64, x64, y64, d, table, n_bins, rho_steps, n_coef, cx, dx, inv_x, cy, dy, inv_y, cut, exact}

// One thread per entry (block 32 x 8).  `gram` may be the same buffer as an output (same leading
// dimension): each entry is read by the thread that then writes it, and the mirror writes of a
// diagonal tile land on entries whose own threads read nothing.
template <int CODE, typename T>
__global__ void recursion_tile(const T* gram, long long ld_gram, int n, int m, NTKFAST_RECURSION_PARAMS, T* nngp,
                               T* ntk, long long ld_out, T* nngp_t, T* ntk_t, long long ld_t) {
  const int j = blockIdx.x * blockDim.x + threadIdx.x;
  const int i = blockIdx.y * blockDim.y + threadIdx.y;
  if (i >= n || j >= m) return;
  if (diagonal && i > j) return;
  const Recursion<T> R = NTKFAST_RECURSION_ARGS;
  const T g = (diagonal && i == j) ? T(0) : gram[(size_t)i * ld_gram + j];
  T sigma, theta;
  entry<CODE, T>(R, i, j, g, sigma, theta);
  store<T>(nngp, ntk, ld_out, nngp_t, ntk_t, ld_t, i, j, sigma, theta, !(diagonal && i == j));
}

// Hand-tiled inner products: BT x BT entries per block of TPB x TPB threads, RPT x RPT per thread;
// BK features per shared-memory stage (8 keeps matvec_fused under 48 KiB of shared memory in float64).
enum : int { BT = 64, TPB = 16, RPT = BT / TPB, BK = 8 };

// acc[r][c] = <X[row0 + ty + TPB r], Y[col0 + tx + TPB c]> (0 outside the matrix).  X, Y: rows of d
// features.  Every thread of the block must call it (it synchronises).
template <typename T>
__device__ inline void tile_products(const T* X, const T* Y, int n, int m, int d, int row0, int col0,
                                     T (&acc)[RPT][RPT]) {
  __shared__ T xs[BT][BK + 1];
  __shared__ T ys[BT][BK + 1];
  const int tx = threadIdx.x, ty = threadIdx.y, tid = ty * TPB + tx;
#pragma unroll
  for (int r = 0; r < RPT; ++r)
#pragma unroll
    for (int c = 0; c < RPT; ++c) acc[r][c] = T(0);
  for (int f0 = 0; f0 < d; f0 += BK) {
    for (int e = tid; e < BT * BK; e += TPB * TPB) {
      const int r = e / BK, f = f0 + e % BK;
      xs[r][e % BK] = (row0 + r < n && f < d) ? X[(size_t)(row0 + r) * d + f] : T(0);
      ys[r][e % BK] = (col0 + r < m && f < d) ? Y[(size_t)(col0 + r) * d + f] : T(0);
    }
    __syncthreads();
#pragma unroll
    for (int f = 0; f < BK; ++f) {
      T a[RPT], b[RPT];
#pragma unroll
      for (int r = 0; r < RPT; ++r) a[r] = xs[ty + TPB * r][f];
#pragma unroll
      for (int c = 0; c < RPT; ++c) b[c] = ys[tx + TPB * c][f];
#pragma unroll
      for (int r = 0; r < RPT; ++r)
#pragma unroll
        for (int c = 0; c < RPT; ++c) acc[r][c] += a[r] * b[c];
    }
    __syncthreads();
  }
}

// Grid (ceil(m / BT), ceil(n / BT)), block (TPB, TPB).  X, Y: the tile's first rows (d features each).
template <int CODE, typename T>
__global__ void __launch_bounds__(TPB* TPB)
    gram_fused(const T* X, const T* Y, int n, int m, NTKFAST_RECURSION_PARAMS, T* nngp, T* ntk, long long ld_out,
               T* nngp_t, T* ntk_t, long long ld_t) {
  const int row0 = blockIdx.y * BT, col0 = blockIdx.x * BT;
  if (diagonal && col0 + BT <= row0) return;  // wholly below the diagonal: written as mirror images
  T acc[RPT][RPT];
  tile_products<T>(X, Y, n, m, d, row0, col0, acc);
  const Recursion<T> R = NTKFAST_RECURSION_ARGS;
#pragma unroll
  for (int r = 0; r < RPT; ++r) {
    const int i = row0 + threadIdx.y + TPB * r;
#pragma unroll
    for (int c = 0; c < RPT; ++c) {
      const int j = col0 + threadIdx.x + TPB * c;
      if (i >= n || j >= m || (diagonal && i > j)) continue;
      T sigma, theta;
      entry<CODE, T>(R, i, j, acc[r][c], sigma, theta);
      store<T>(nngp, ntk, ld_out, nngp_t, ntk_t, ld_t, i, j, sigma, theta, !(diagonal && i == j));
    }
  }
}

// Grid (n_slices, ceil(n / BT)), block (TPB, TPB).  Block (s, b) adds K[rows of b, column tiles
// s * tiles_per_slice ...] @ V[those columns] into partial[s] (n x k, zeroed here first, so every
// element of every slice is written).  With `diagonal` (K(X, X), Y == X), entry (i, i) is exact.
template <int CODE, typename T>
__global__ void __launch_bounds__(TPB* TPB)
    matvec_fused(const T* X, const T* Y, int n, int m, NTKFAST_RECURSION_PARAMS, int want_ntk, const T* V, int k,
                 int tiles_per_slice, T* partial) {
  __shared__ T kt[BT][BT + 1];
  const int tx = threadIdx.x, ty = threadIdx.y, tid = ty * TPB + tx;
  const int row0 = blockIdx.y * BT;
  T* part = partial + (size_t)blockIdx.x * n * k;
  // (row, column of V) pairs are dealt to threads the same way in every loop below, so each
  // thread reads back only what it wrote itself: no race on `part`
  for (int e = tid; e < BT * k; e += TPB * TPB) {
    const int i = row0 + e / k;
    if (i < n) part[(size_t)i * k + e % k] = T(0);
  }
  const Recursion<T> R = NTKFAST_RECURSION_ARGS;
  const int n_col_tiles = (m + BT - 1) / BT;
  const int t0 = blockIdx.x * tiles_per_slice;
  const int t1 = min(t0 + tiles_per_slice, n_col_tiles);
  for (int t = t0; t < t1; ++t) {
    const int col0 = t * BT;
    T acc[RPT][RPT];
    tile_products<T>(X, Y, n, m, d, row0, col0, acc);
#pragma unroll
    for (int r = 0; r < RPT; ++r) {
      const int i = row0 + ty + TPB * r;
#pragma unroll
      for (int c = 0; c < RPT; ++c) {
        const int j = col0 + tx + TPB * c;
        T value = T(0);
        if (i < n && j < m) {
          T sigma, theta;
          entry<CODE, T>(R, i, j, acc[r][c], sigma, theta);
          value = want_ntk ? theta : sigma;
        }
        kt[ty + TPB * r][tx + TPB * c] = value;
      }
    }
    __syncthreads();
    const int cols = min(BT, m - col0);
    for (int e = tid; e < BT * k; e += TPB * TPB) {
      const int r = e / k, c = e % k, i = row0 + r;
      if (i >= n) continue;
      T s = part[(size_t)i * k + c];
      for (int jj = 0; jj < cols; ++jj) s += kt[r][jj] * V[(size_t)(col0 + jj) * k + c];
      part[(size_t)i * k + c] = s;
    }
    __syncthreads();  // kt is overwritten by the next tile
  }
}

// out[e] = sum over s of partial[s * size + e], s in increasing order (deterministic).
template <typename T>
__global__ void sum_slices(const T* partial, int n_slices, long long size, T* out) {
  for (long long e = (long long)blockIdx.x * blockDim.x + threadIdx.x; e < size; e += (long long)gridDim.x * blockDim.x) {
    T s = T(0);
    for (int q = 0; q < n_slices; ++q) s += partial[(size_t)q * size + e];
    out[e] = s;
  }
}

#undef NTKFAST_RECURSION_PARAMS
#undef NTKFAST_RECURSION_ARGS

}  // namespace ntkfast
