// Bivariate normal orthant probabilities and ELU's closed-form dual kernel: the CUDA twin of
// ntkfast/bivariate.py (bvnu, elu_dual and their helpers).
//
// Same functions, same names (without the leading underscore), same formulas in the same order of
// operations (see the Python docstrings for the derivations: Genz's 2004 Gauss-Legendre
// Drezner-Wesolowsky method, the tilted orthants of ELU's (K, Kdot)); a Python tuple is a struct
// here.  Float64 throughout, also in float32 kernels (as on the CPU).  __host__ __device__ so that
// the host emulation (tests/cuda_emu) runs these very lines (tests/test_cuda_elu_exact.py checks
// them against the Numba ones).  The CPU's vectorised elu_dual_row has no twin: a GPU thread takes
// one pair.  Used by gram.cu's series_layers for ELU/SELU's pairs beyond the series' cut.
#pragma once

// NVRTC (CuPy) has the math functions built in and no system headers.
#ifndef __CUDACC_RTC__
#include <math.h>
#endif

namespace ntkfast {
namespace bivariate {

constexpr double TWO_PI = 6.283185307179586;       // 2 pi
constexpr double INV_SQRT_2PI = 0.3989422804014327;  // 1 / sqrt(2 pi)
constexpr double SQRT_HALF = 0.7071067811865476;     // sqrt(1/2)
constexpr double PI = 3.141592653589793;

// 1 - rho^2 below this is taken as parallel (bivariate.PARALLEL_TOL64 / PARALLEL_TOL32)
constexpr double PARALLEL_TOL64 = 1e-12;
constexpr double PARALLEL_TOL32 = 1e-5;

// Upper normal tail Q(x) = 1 - Phi(x), accurate in both tails.
__host__ __device__ inline double q(double x) { return 0.5 * erfc(x * SQRT_HALF); }

__host__ __device__ inline double pdf(double x) { return INV_SQRT_2PI * exp(-0.5 * x * x); }

__host__ __device__ inline double clip01(double x) { return x < 0.0 ? 0.0 : (x > 1.0 ? 1.0 : x); }

// Genz's |r| >= 0.925 branch, r > 0 (k, hk already flipped for r < 0), 1 - r^2 > 0: a is the
// half-width of the Gauss-Legendre rule in sqrt(1 - r^2), lead the closed-form part.
struct NearSetup { double bs, a, c, d, lead; };

__host__ __device__ inline NearSetup near_setup(double h, double k, double hk, double one_minus_r2) {
  const double a_s = one_minus_r2;
  const double a = sqrt(a_s);
  const double bs = (h - k) * (h - k);
  const double c = (4.0 - hk) / 8.0;
  const double d = (12.0 - hk) / 80.0;
  const double asr = -0.5 * (bs / a_s + hk);
  double lead = a * exp(asr) * (1.0 - c * (bs - a_s) * (1.0 - d * bs) / 3.0 + c * d * a_s * a_s);
  if (hk > -100.0) {
    const double b = sqrt(bs);
    const double sp = sqrt(TWO_PI) * q(b / a);  // sqrt(2 pi) Phi(-b/a)
    lead -= exp(-0.5 * hk) * sp * b * (1.0 - c * bs * (1.0 - d * bs) / 3.0);
  }
  return {bs, 0.5 * a, c, d, lead};
}

// One node's term of the |r| >= 0.925 integral at t = a (1 +- x_i).
__host__ __device__ inline double node_term(double t, double bs, double hk, double c, double d) {
  const double xs = t * t;
  const double asr = -0.5 * (bs / xs + hk);
  const double rs = sqrt(1.0 - xs);
  const double sp = 1.0 + c * xs * (1.0 + 5.0 * d * xs);
  const double ep = exp(-0.5 * hk * xs / ((1.0 + rs) * (1.0 + rs))) / rs;
  return exp(asr) * (sp - ep);
}

// The end of Genz's |r| >= 0.925 branch (k flipped for r < 0), unclipped.
__host__ __device__ inline double near_finish(double h, double k, double r, double bvn) {
  if (r > 0.0) return bvn + q(h > k ? h : k);
  if (h >= k) return -bvn;
  // P(h < x < k) (k flipped above) = Phi(k) - Phi(h), from the smaller tails
  const double band = h < 0.0 ? q(-k) - q(-h) : q(h) - q(k);
  return band - bvn;
}

// P(x > h, y > k), (x, y) standard bivariate normal with correlation r (Genz 2004);
// one_minus_r2 = 1 - r^2 (formed by the caller without cancellation); h, k may be infinite.
__host__ __device__ inline double bvnu(double h, double k, double r, double one_minus_r2) {
  // Gauss-Legendre nodes (positive half) and weights on [-1, 1], 6, 12 and 20 points (Genz)
  const double W6[3] = {0.1713244923791705, 0.3607615730481384, 0.4679139345726904};
  const double X6[3] = {0.9324695142031522, 0.6612093864662647, 0.2386191860831970};
  const double W12[6] = {0.04717533638651177, 0.1069393259953183, 0.1600783285433464, 0.2031674267230659,
                         0.2334925365383547, 0.2491470458134029};
  const double X12[6] = {0.9815606342467191, 0.9041172563704750, 0.7699026741943050, 0.5873179542866171,
                         0.3678314989981802, 0.1252334085114692};
  const double W20[10] = {0.01761400713915212, 0.04060142980038694, 0.06267204833410906, 0.08327674157670475,
                          0.1019301198172404, 0.1181945319615184, 0.1316886384491766, 0.1420961093183821,
                          0.1491729864726037, 0.1527533871307259};
  const double X20[10] = {0.9931285991850949, 0.9639719272779138, 0.9122344282513259, 0.8391169718222188,
                          0.7463319064601508, 0.6360536807265150, 0.5108670019508271, 0.3737060887154196,
                          0.2277858511416451, 0.07652652113349733};
  if ((isinf(h) && h > 0.0) || (isinf(k) && k > 0.0)) return 0.0;
  if (isinf(h)) return isinf(k) ? 1.0 : q(k);
  if (isinf(k)) return q(h);
  if (r == 0.0) return q(h) * q(k);
  const double ar = fabs(r);
  const double* w;
  const double* x;
  int n;
  if (ar < 0.3) {
    w = W6, x = X6, n = 3;
  } else if (ar < 0.75) {
    w = W12, x = X12, n = 6;
  } else {
    w = W20, x = X20, n = 10;
  }
  double hk = h * k;
  double bvn = 0.0;
  if (ar < 0.925) {
    const double hs = 0.5 * (h * h + k * k);
    const double asr = 0.5 * asin(r);
    for (int i = 0; i < n; ++i) {
      for (double sgn = -1.0; sgn <= 1.0; sgn += 2.0) {
        const double sn = sin(asr * (1.0 + sgn * x[i]));
        bvn += w[i] * exp((sn * hk - hs) / (1.0 - sn * sn));
      }
    }
    bvn = bvn * asr / TWO_PI + q(h) * q(k);
  } else {
    if (r < 0.0) {
      k = -k;
      hk = -hk;
    }
    if (one_minus_r2 > 0.0) {
      const NearSetup p = near_setup(h, k, hk, one_minus_r2);
      double acc = 0.0;
      for (int i = 0; i < n; ++i) {
        for (double sgn = -1.0; sgn <= 1.0; sgn += 2.0) {
          acc += w[i] * node_term(p.a * (1.0 + sgn * x[i]), p.bs, hk, p.c, p.d);
        }
      }
      bvn = (p.a * acc - p.lead) / TWO_PI;
    }
    bvn = near_finish(h, k, r, bvn);
  }
  return clip01(bvn);
}

// E[x 1[x > h, y > k]], correlation r, s = sqrt(1 - r^2) (Rosenbaum 1961).
__host__ __device__ inline double moment(double h, double k, double r, double s) {
  if (s > 0.0) return pdf(h) * q((k - r * h) / s) + r * pdf(k) * q((h - r * k) / s);
  if (r > 0.0) return pdf(h > k ? h : k);  // y = x
  // y = -x: h < x < -k
  return h < -k ? pdf(h) - pdf(-k) : 0.0;
}

// The tilted orthant {e1 u > 0, e2 v > 0} under e^(t1 u + t2 v): the mean m = S t, the log mass
// factor q = t' S t / 2, bvnu's limits (h, k) and correlation rr.
struct Geometry { double m1, m2, q, h, k, rr; };

__host__ __device__ inline Geometry geometry(double e1, double e2, double t1, double t2, double sxx, double syy,
                                             double sxy, double s1, double s2, double r) {
  const double m1 = t1 * sxx + t2 * sxy;
  const double m2 = t1 * sxy + t2 * syy;
  const double qq = 0.5 * (t1 * t1 * sxx + 2.0 * t1 * t2 * sxy + t2 * t2 * syy);
  return {m1, m2, qq, -e1 * m1 / s1, -e2 * m2 / s2, e1 * e2 * r};
}

struct Orthant { double mass, moment; };

// (mass, moment) of the tilted orthant from its probability p = bvnu(h, k, rr): the moment is of
// u (which 1), of v (2), or not wanted (0; its normal tails are not computed).
__host__ __device__ inline Orthant tilted(double p, const Geometry& G, double e1, double e2, double s1, double s2,
                                          double s, int which) {
  const double g = exp(G.q);
  if (which == 1) return {g * p, g * (G.m1 * p + s1 * e1 * moment(G.h, G.k, G.rr, s))};
  if (which == 2) return {g * p, g * (G.m2 * p + s2 * e2 * moment(G.k, G.h, G.rr, s))};
  return {g * p, 0.0};
}

// (E[e^(t1 u + t2 v) 1[e1 u > 0, e2 v > 0]], the same times u (which 1) or v (2)).
__host__ __device__ inline Orthant orthant(double e1, double e2, double t1, double t2, double sxx, double syy,
                                           double sxy, double s1, double s2, double r, double omr2, double s,
                                           int which) {
  const Geometry G = geometry(e1, e2, t1, t2, sxx, syy, sxy, s1, s2, r);
  return tilted(bvnu(G.h, G.k, G.rr, omr2), G, e1, e2, s1, s2, s, which);
}

// (s1, s2, r, 1 - r^2, sxy, sqrt(1 - r^2)): sxy clipped to Cauchy-Schwarz, parallel below the tolerance.
struct Pair { double s1, s2, r, omr2, sxy, s; };

__host__ __device__ inline Pair pair(double sxx, double syy, double sxy, double parallel_tol) {
  const double s1 = sqrt(sxx);
  const double s2 = sqrt(syy);
  const double c = sxy / sqrt(sxx * syy);
  double r = c > 1.0 ? 1.0 : (c < -1.0 ? -1.0 : c);  // exactly 1 for sxy = sqrt(sxx syy)
  double omr2 = (1.0 - r) * (1.0 + r);
  if (omr2 < parallel_tol) {
    r = r > 0.0 ? 1.0 : -1.0;
    omr2 = 0.0;
  }
  return {s1, s2, r, omr2, r * s1 * s2, sqrt(omr2)};
}

struct EluDual { double k, kdot; };

// (K, Kdot) from the three tilted orthants (see elu_dual).
__host__ __device__ inline EluDual combine(double sxx, double syy, const Pair& P, double alpha, const Orthant& pn,
                                           const Orthant& np, const Orthant& uv) {
  const double s1 = P.s1, s2 = P.s2, r = P.r, s = P.s;
  // E[u+ v+] (arc-cosine) and P(u > 0, v > 0)
  const double theta = atan2(s, r);
  const double kpp = s1 * s2 * (s + (PI - theta) * r) / TWO_PI;
  const double ppp = (PI - theta) / TWO_PI;
  // untilted: E[u 1[u > 0, v < 0]] = s1 phi(0) (1 - r) / 2 (Rosenbaum at h = k = 0), and mirrored
  const double u_pn0 = s1 * INV_SQRT_2PI * 0.5 * (1.0 - r);
  const double v_np0 = s2 * INV_SQRT_2PI * 0.5 * (1.0 - r);
  // E[e^u 1[u < 0, v < 0]] = E[e^u 1[u < 0]] - E[e^u 1[u < 0, v > 0]], the first univariate
  const double a_u = exp(0.5 * sxx) * q(s1) - np.mass;
  const double a_v = exp(0.5 * syy) * q(s2) - pn.mass;
  const double p_nn = ppp;  // P(u < 0, v < 0) = P(u > 0, v > 0)
  const double k = kpp + alpha * ((pn.moment - u_pn0) + (np.moment - v_np0)) +
                   alpha * alpha * ((uv.mass - a_u) - a_v + p_nn);
  const double kd = ppp + alpha * (pn.mass + np.mass) + alpha * alpha * uv.mass;
  return {k, kd};
}

// (K, Kdot) of ELU(alpha) for pre-activation covariances (sxx, syy, sxy), both variances > 0;
// sxy clipped to the Cauchy-Schwarz range, a pair with 1 - rho^2 < parallel_tol taken as parallel.
__host__ __device__ inline EluDual elu_dual(double sxx, double syy, double sxy, double alpha, double parallel_tol) {
  const Pair P = pair(sxx, syy, sxy, parallel_tol);
  // e^v on {u > 0, v < 0}: (mass, u-moment); e^u on {u < 0, v > 0}: (mass, v-moment); e^(u + v)
  // on {u < 0, v < 0}: the mass
  const Orthant pn = orthant(1.0, -1.0, 0.0, 1.0, sxx, syy, P.sxy, P.s1, P.s2, P.r, P.omr2, P.s, 1);
  const Orthant np = orthant(-1.0, 1.0, 1.0, 0.0, sxx, syy, P.sxy, P.s1, P.s2, P.r, P.omr2, P.s, 2);
  const Orthant uv = orthant(-1.0, -1.0, 1.0, 1.0, sxx, syy, P.sxy, P.s1, P.s2, P.r, P.omr2, P.s, 0);
  return combine(sxx, syy, P, alpha, pn, np, uv);
}

}  // namespace bivariate
}  // namespace ntkfast
