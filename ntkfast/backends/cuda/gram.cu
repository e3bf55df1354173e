// Tiled NNGP/NTK Gram kernels for the GPU backend (loaded with cupy.RawModule; the host side is
// not written yet).  Both use the layer maps of recursion.cuh; the activation code is a template
// parameter so that the dispatch folds away, as in the Numba backend.
//
//  * recursion_tile: the inner products come from cuBLAS (a GEMM into `gram`); one thread per
//    entry runs the fused recursion over all layers in registers and writes nngp/ntk.  With
//    `symmetric`, only entries with i <= j are computed and each is written to both halves; the
//    diagonal takes the exact values of the diagonal recursion.
//  * matvec_tile: matrix-free K @ V.  Each block computes a TILE x TILE block of inner products
//    with shared-memory tiling over the features, the recursion in registers, multiplies it by the
//    matching rows of V and accumulates into `out` with atomicAdd: K is never stored.
#include "recursion.cuh"

namespace ntkfast {

template <typename T> struct Layers {
  const T* first;  // [w, b, alpha, beta]: Sigma_1 = w g + b, Theta_1 = alpha g + beta
  const T* steps;  // n_steps x [res, W^2, b^2, alpha, beta]
  int n_steps;
  T p0, p1, p2;    // activation parameters
};

template <int CODE, typename T>
__device__ inline void run_layers(const Layers<T>& L, T g, const T* sig_x, const T* sig_y, int ldx, int ldy,
                                  int i, int j, T& sigma, T& theta) {
  sigma = L.first[0] * g + L.first[1];
  theta = L.first[2] * g + L.first[3];
  for (int l = 0; l < L.n_steps; ++l) {
    Dual<T> kk = dual<T>(CODE, L.p0, L.p1, L.p2, sig_x[l * ldx + i], sig_y[l * ldy + j], sigma);
    const T* c = L.steps + 5 * l;
    step<T>(kk.k, kk.kdot, sigma, theta, c[0], c[1], c[2], c[3], c[4]);
  }
}

template <int CODE, typename T>
__global__ void recursion_tile(const T* __restrict__ gram, int n, int m, int ld_gram,
                               const T* __restrict__ sig_x, const T* __restrict__ sig_y,
                               Layers<T> layers, T* nngp, T* ntk, int ld_out,
                               const T* __restrict__ diag_nngp, const T* __restrict__ diag_ntk, int symmetric) {
  const int j = blockIdx.x * blockDim.x + threadIdx.x;
  const int i = blockIdx.y * blockDim.y + threadIdx.y;
  if (i >= n || j >= m) return;
  if (symmetric && i > j) return;
  T sigma, theta;
  if (symmetric && i == j) {
    sigma = diag_nngp[i];
    theta = diag_ntk[i];
  } else {
    run_layers<CODE, T>(layers, gram[(size_t)i * ld_gram + j], sig_x, sig_y, n, m, i, j, sigma, theta);
  }
  if (nngp) {
    nngp[(size_t)i * ld_out + j] = sigma;
    if (symmetric) nngp[(size_t)j * ld_out + i] = sigma;
  }
  if (ntk) {
    ntk[(size_t)i * ld_out + j] = theta;
    if (symmetric) ntk[(size_t)j * ld_out + i] = theta;
  }
}

constexpr int TILE = 32;

template <int CODE, typename T>
__global__ void matvec_tile(const T* __restrict__ X, const T* __restrict__ Y, int n, int m, int d,
                            const T* __restrict__ sig_x, const T* __restrict__ sig_y, Layers<T> layers,
                            int want_ntk, const T* __restrict__ V, int k, T* out) {
  __shared__ T xs[TILE][TILE + 1];
  __shared__ T ys[TILE][TILE + 1];
  __shared__ T kt[TILE][TILE + 1];
  const int tx = threadIdx.x, ty = threadIdx.y;
  const int i = blockIdx.y * TILE + ty;  // row of K
  const int j = blockIdx.x * TILE + tx;  // column of K
  T g = T(0);
  for (int f0 = 0; f0 < d; f0 += TILE) {
    const int row_x = blockIdx.y * TILE + ty, row_y = blockIdx.x * TILE + ty;
    xs[ty][tx] = (row_x < n && f0 + tx < d) ? X[(size_t)row_x * d + f0 + tx] : T(0);
    ys[ty][tx] = (row_y < m && f0 + tx < d) ? Y[(size_t)row_y * d + f0 + tx] : T(0);
    __syncthreads();
    for (int f = 0; f < TILE; ++f) g += xs[ty][f] * ys[tx][f];
    __syncthreads();
  }
  T sigma = T(0), theta = T(0);
  if (i < n && j < m) run_layers<CODE, T>(layers, g, sig_x, sig_y, n, m, i, j, sigma, theta);
  kt[ty][tx] = (i < n && j < m) ? (want_ntk ? theta : sigma) : T(0);
  __syncthreads();
  // out[i, c] += sum_j K[i, j] V[j, c] for this block's rows and columns
  for (int c = tx; c < k; c += TILE) {
    if (i >= n) break;
    T acc = T(0);
    for (int jj = 0; jj < TILE; ++jj) {
      const int col = blockIdx.x * TILE + jj;
      if (col < m) acc += kt[ty][jj] * V[(size_t)col * k + c];
    }
    atomicAdd(&out[(size_t)i * k + c], acc);
  }
}

}  // namespace ntkfast

// Explicit instantiations for nvcc (CuPy instantiates by name_expressions instead).
#define NTKFAST_INSTANTIATE(CODE, T)                                                                       \
  template __global__ void ntkfast::recursion_tile<CODE, T>(const T*, int, int, int, const T*, const T*,  \
                                                            ntkfast::Layers<T>, T*, T*, int, const T*,     \
                                                            const T*, int);                                \
  template __global__ void ntkfast::matvec_tile<CODE, T>(const T*, const T*, int, int, int, const T*,      \
                                                         const T*, ntkfast::Layers<T>, int, const T*, int, \
                                                         T*);
NTKFAST_INSTANTIATE(0, float)
NTKFAST_INSTANTIATE(0, double)
NTKFAST_INSTANTIATE(1, float)
NTKFAST_INSTANTIATE(1, double)
NTKFAST_INSTANTIATE(2, double)
NTKFAST_INSTANTIATE(17, double)
