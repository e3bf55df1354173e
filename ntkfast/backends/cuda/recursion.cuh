// Closed-form layer maps of the NNGP/NTK recursion: the CUDA twin of ntkfast/recursion.py.
//
// Same functions, same names, same formulas (see the Python docstrings for the derivations);
// __host__ __device__ so that the host compiler can check them against the Python on a machine
// without a GPU (tests/test_cuda_sources.py).  T is float or double.
#pragma once

// NVRTC (CuPy) has the math functions built in and no system headers.
#ifndef __CUDACC_RTC__
#include <math.h>
#endif

namespace ntkfast {

// Integer activation codes: keep in sync with ntkfast/spec.py.
enum : int { ABRELU = 0, ERF = 1, GELU = 2, SIN = 3, SIGN = 4, EXP = 5, GAUSSIAN = 6,
             RECTIFIED_MONOMIAL = 16, MONOMIAL = 32 };

template <typename T> struct Dual { T k; T kdot; };

template <typename T> __host__ __device__ inline T parallel_tol();
template <> __host__ __device__ inline double parallel_tol<double>() { return 1e-12; }
template <> __host__ __device__ inline float parallel_tol<float>() { return 1e-5f; }

#define NTK_PI 3.14159265358979323846
#define NTK_INV_2PI 0.15915494309189533577

// r = sqrt(sxx syy - sxy^2) (0 within rounding noise of parallel), theta = atan2(r, sxy);
// theta = pi/2 when r = sxy = 0.  In units of sxx (y = syy/sxx, c = sxy/sxx): the product
// sxx syy would overflow or underflow at extreme but representable variances.
template <typename T> __host__ __device__ inline void angle(T sxx, T syy, T sxy, T& r, T& theta) {
  T inv = sxx > T(0) ? T(1) / sxx : T(0);
  T y = syy * inv;
  T c = sxy * inv;
  T d = y - c * c;
  r = d > parallel_tol<T>() * y ? sqrt(d) * sxx : T(0);
  theta = (r == T(0) && sxy == T(0)) ? T(NTK_PI / 2) : atan2(r, sxy);
}

// det(I + c Sigma) = a^2 dn with a = 1 + c sxx, and x, v, w = c (sxx, syy, sxy) / a: no product of
// two variances, nothing cancelling between large terms (ntkfast.recursion._scaled_det1).
template <typename T> struct ScaledDet { T a, dn, x, v, w; };

// A pair parallel to rounding (x v - w^2 <= tol x v, tol as angle's) is held at parallel: x v - w^2 = 0
// (ntkfast.recursion._scaled_det1_held; erf and the Gaussian).  scaled_det1_unheld: GELU's, unchanged.
template <typename T> __host__ __device__ inline ScaledDet<T> scaled_det1(T c, T sxx, T syy, T sxy) {
  const T tol = parallel_tol<T>();
  T a = T(1) + c * sxx;
  T ia = T(1) / a;
  T x = c * sxx * ia, v = c * syy * ia, w = c * sxy * ia;
  T aw = fabs(w);
  T d = x * (v - aw) + aw * (x - aw);  // x v - w^2, exactly 0 when parallel
  return {a, ia * (ia + x + v) + (d > tol * (x * v) ? d : T(0)), x, v, w};
}

template <typename T> __host__ __device__ inline ScaledDet<T> scaled_det1_unheld(T c, T sxx, T syy, T sxy) {
  T a = T(1) + c * sxx;
  T ia = T(1) / a;
  T x = c * sxx * ia, v = c * syy * ia, w = c * sxy * ia;
  T aw = fabs(w);
  T d = x * (v - aw) + aw * (x - aw);
  return {a, ia * (ia + x + v) + (d > T(0) ? d : T(0)), x, v, w};
}

template <typename T> __host__ __device__ inline Dual<T> abrelu(T a, T b, T sxx, T syy, T sxy) {
  T r, theta;
  angle(sxx, syy, sxy, r, theta);
  T f = (a - b) * (a - b) * T(NTK_INV_2PI);
  T kdot = (a * a + b * b) * T(0.5) - f * theta;
  return {f * r + kdot * sxy, kdot};
}

template <typename T> __host__ __device__ inline Dual<T> abrelu_diag(T a, T b, T sxx) {
  if (sxx > T(0)) {
    T h = (a * a + b * b) * T(0.5);
    return {h * sxx, h};
  }
  return abrelu(a, b, sxx, sxx, sxx);
}

template <typename T> __host__ __device__ inline Dual<T> erf_dual(T a, T b, T c, T sxx, T syy, T sxy) {
  T b2 = b * b;
  ScaledDet<T> m = scaled_det1(T(2) * b2, sxx, syy, sxy);
  T sdn = sqrt(m.dn);
  T k = T(2.0 / NTK_PI) * atan2(m.w, sdn);
  T kdot = T(4.0 / NTK_PI) / (m.a * sdn);
  return {a * a * k + c * c, a * a * b2 * kdot};
}

// GELU without cancellation and in units of a = 1 + sxx (see ntkfast.recursion.gelu).
template <typename T> __host__ __device__ inline Dual<T> gelu(T sxx, T syy, T sxy) {
  T one = T(1);
  ScaledDet<T> m = scaled_det1_unheld(one, sxx, syy, sxy);
  T ia = one / m.a;
  T y = ia + m.v;
  T iy = one / y;
  T sdn = sqrt(m.dn);
  T rsq = one / sdn;
  T ang = atan2(m.w, sdn) * T(NTK_INV_2PI);
  T q = m.w * m.w * iy;
  T k = T(0.25) * sxy + sxy * ang + (m.x * (syy * iy) * sdn + q * ia * rsq) * T(NTK_INV_2PI);
  T u = ia * rsq;
  T kdot = T(0.25) + ang + m.w * ((one + y) * iy * u + u * u * rsq) * T(NTK_INV_2PI);
  return {k, kdot};
}

template <typename T> __host__ __device__ inline T machine_eps();
template <> __host__ __device__ inline double machine_eps<double>() { return 2.220446049250313e-16; }
template <> __host__ __device__ inline float machine_eps<float>() { return 1.1920929e-07f; }

// sxx + syy - 2 sxy, at least (sqrt sxx - sqrt syy)^2, and exactly that within 64 eps of rounding
// noise (ntkfast.recursion._sq_distance).
template <typename T> __host__ __device__ inline T sq_distance(T sxx, T syy, T sxy) {
  T total = sxx + syy;
  T d = total - T(2) * sxy;
  T f = sqrt(sxx) - sqrt(syy);
  f = f * f;
  return d <= T(64) * machine_eps<T>() * total ? f : (d > f ? d : f);
}

template <typename T> __host__ __device__ inline Dual<T> sin_dual(T a, T b, T c, T sxx, T syy, T sxy) {
  T b2 = b * b;
  T h = T(-0.5) * b2;
  T e_minus = exp(h * sq_distance(sxx, syy, sxy));
  T half_a2 = T(0.5) * a * a;
  // cos(2c) = 0 to rounding (the RBF): K = a^2/2 e- (ntkfast.recursion.rbf_like)
  if (fabs(cos(T(2) * c)) <= T(4) * machine_eps<T>()) return {half_a2 * e_minus, half_a2 * b2 * e_minus};
  T e_plus = exp(h * sq_distance(sxx, syy, -sxy));
  T x = T(-2) * b2 * sxy;
  T diff = fabs(x) < T(0.5) ? -e_minus * expm1(x) : e_minus - e_plus;
  T sc = sin(c), cc = cos(c);
  return {half_a2 * (diff + T(2) * sc * sc * e_plus), half_a2 * b2 * (diff + T(2) * cc * cc * e_plus)};
}

template <typename T> __host__ __device__ inline Dual<T> sign_dual(T sxx, T syy, T sxy) {
  T r, theta;
  angle(sxx, syy, sxy, r, theta);
  return {T(2.0 / NTK_PI) * (T(NTK_PI / 2) - theta), T(0)};
}

template <typename T> __host__ __device__ inline Dual<T> sign_diag(T sxx) {
  return {sxx > T(0) ? T(1) : T(0), T(0)};
}

template <typename T> __host__ __device__ inline Dual<T> exp_dual(T a, T b, T sxx, T syy, T sxy) {
  T k = a * a * exp(T(0.5) * b * b * (sxx + syy + T(2) * sxy));
  return {k, b * b * k};
}

template <typename T> __host__ __device__ inline Dual<T> gaussian(T a, T b, T sxx, T syy, T sxy) {
  ScaledDet<T> m = scaled_det1(T(-2) * b, sxx, syy, sxy);
  T inv_sqrt = T(1) / (m.a * sqrt(m.dn > T(0) ? m.dn : T(0)));  // inf where not positive definite
  T k = a * a * inv_sqrt;
  return {k, T(4) * b * b * (sxy * k) * inv_sqrt * inv_sqrt};
}

// (pi - theta) Q_n(c, S) + r R_n(c, S), S = sxx syy (Cho & Saul's J_n, homogenised).
template <typename T> __host__ __device__ inline T arccos_bracket(int n, T pmt, T r, T c, T s) {
  T c2 = c * c, q, rr;
  switch (n) {
    case 0: q = T(1); rr = T(0); break;
    case 1: q = c; rr = T(1); break;
    case 2: q = s + T(2) * c2; rr = T(3) * c; break;
    case 3: q = c * (T(6) * c2 + T(9) * s); rr = T(11) * c2 + T(4) * s; break;
    case 4: q = T(24) * c2 * c2 + T(72) * c2 * s + T(9) * s * s; rr = c * (T(50) * c2 + T(55) * s); break;
    default: q = c * (T(120) * c2 * c2 + T(600) * c2 * s + T(225) * s * s);
             rr = T(274) * c2 * c2 + T(607) * c2 * s + T(64) * s * s;
  }
  return pmt * q + r * rr;
}

__host__ __device__ inline long double_factorial_odd(int m) {  // (2m - 1)!!
  long out = 1;
  for (int k = 1; k < 2 * m; k += 2) out *= k;
  return out;
}

template <typename T> __host__ __device__ inline T ipow(T x, int n) {
  T out = T(1);
  for (int i = 0; i < n; ++i) out *= x;
  return out;
}

template <typename T> __host__ __device__ inline Dual<T> rectified_monomial(int n, T sxx, T syy, T sxy) {
  T r, theta;
  angle(sxx, syy, sxy, r, theta);
  T pmt = T(NTK_PI) - theta;
  T s = sxx * syy;
  T k = arccos_bracket(n, pmt, r, sxy, s) * T(NTK_INV_2PI);
  if (n == 0) return {k, T(0)};
  return {k, T(n * n * NTK_INV_2PI) * arccos_bracket(n - 1, pmt, r, sxy, s)};
}

template <typename T> __host__ __device__ inline Dual<T> rectified_monomial_diag(int n, T sxx) {
  if (!(sxx > T(0))) return rectified_monomial(n, sxx, sxx, sxx);
  T k = T(0.5 * double_factorial_odd(n)) * ipow(sxx, n);
  if (n == 0) return {k, T(0)};
  return {k, T(0.5 * n * n * double_factorial_odd(n - 1)) * ipow(sxx, n - 1)};
}

__host__ __device__ inline long isserlis_coefficient(int n, int k) {
  long binom = 1;
  for (int i = 0; i < k; ++i) binom = binom * (n - i) / (i + 1);
  long fact = 1;
  for (int i = 2; i <= k; ++i) fact *= i;
  long dfact = double_factorial_odd((n - k) / 2);
  return binom * binom * fact * dfact * dfact;
}

template <typename T> __host__ __device__ inline T isserlis(int n, T sxx, T syy, T sxy) {
  T s = sxx * syy, total = T(0);
  for (int k = n % 2; k <= n; k += 2) total += T(isserlis_coefficient(n, k)) * ipow(sxy, k) * ipow(s, (n - k) / 2);
  return total;
}

template <typename T> __host__ __device__ inline Dual<T> monomial(int n, T sxx, T syy, T sxy) {
  if (n == 0) return {T(1), T(0)};
  return {isserlis(n, sxx, syy, sxy), T(n * n) * isserlis(n - 1, sxx, syy, sxy)};
}

template <typename T> __host__ __device__ inline Dual<T> monomial_diag(int n, T sxx) {
  T k = T(double_factorial_odd(n)) * ipow(sxx, n);
  if (n == 0) return {k, T(0)};
  return {k, T(n * n * double_factorial_odd(n - 1)) * ipow(sxx, n - 1)};
}

template <typename T> __host__ __device__ inline Dual<T> dual(int code, T p0, T p1, T p2, T sxx, T syy, T sxy) {
  switch (code) {
    case ABRELU: return abrelu(p0, p1, sxx, syy, sxy);
    case ERF: return erf_dual(p0, p1, p2, sxx, syy, sxy);
    case GELU: return gelu(sxx, syy, sxy);
    case SIN: return sin_dual(p0, p1, p2, sxx, syy, sxy);
    case SIGN: return sign_dual(sxx, syy, sxy);
    case EXP: return exp_dual(p0, p1, sxx, syy, sxy);
    case GAUSSIAN: return gaussian(p0, p1, sxx, syy, sxy);
    default:
      return code < MONOMIAL ? rectified_monomial(code - RECTIFIED_MONOMIAL, sxx, syy, sxy)
                             : monomial(code - MONOMIAL, sxx, syy, sxy);
  }
}

template <typename T> __host__ __device__ inline Dual<T> dual_diag(int code, T p0, T p1, T p2, T sxx) {
  switch (code) {
    case ABRELU: return abrelu_diag(p0, p1, sxx);
    case ERF: return erf_dual(p0, p1, p2, sxx, sxx, sxx);
    case GELU: return gelu(sxx, sxx, sxx);
    case SIN: return sin_dual(p0, p1, p2, sxx, sxx, sxx);
    case SIGN: return sign_diag(sxx);
    case EXP: return exp_dual(p0, p1, sxx, sxx, sxx);
    case GAUSSIAN: return gaussian(p0, p1, sxx, sxx, sxx);
    default:
      return code < MONOMIAL ? rectified_monomial_diag(code - RECTIFIED_MONOMIAL, sxx)
                             : monomial_diag(code - MONOMIAL, sxx);
  }
}

// One (activation, Dense) step: see ntkfast.recursion.step.
template <typename T>
__host__ __device__ inline void step(T k, T kdot, T& sigma, T& theta, T res, T w2, T b2, T alpha, T beta) {
  T s = res * sigma + w2 * k + b2;
  theta = res * theta + alpha * k + beta + w2 * kdot * theta;
  sigma = s;
}

}  // namespace ntkfast
