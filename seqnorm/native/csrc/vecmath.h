// Vectorisable exp / sigmoid / tanh for the kernels' fused passes over the gates.
//
// The functions are branch-free and inline, so that GCC and clang vectorise the loops that
// call them at -O3 (glibc's libmvec is used for expf only under -ffast-math, which we do not
// want). exp: Cody-Waite reduction x = n ln2 + r, |r| <= ln2/2, a Taylor polynomial of r
// (degree 7 for float, 13 for double: truncation below half an ulp), and 2^n built in the
// exponent bits. Accuracy: ~1-2 ulp in exp and sigmoid; tanh = 1 - 2 / (exp(2|x|) + 1) is
// accurate to ~1 ulp of 1 (absolute), which is what the 1e-5 / 1e-10 comparisons with torch
// need.
#pragma once

#include <cstdint>
#include <cstring>
#include <type_traits>

namespace seqnorm {

template <typename T>
struct ExpConst;

template <>
struct ExpConst<float> {
  using I = int32_t;
  static constexpr float lo = -87.3f, hi = 88.3f;
  static constexpr float log2e = 1.44269504088896341f;
  static constexpr float ln2_hi = 0.693145751953125f, ln2_lo = 1.428606765330187045e-06f;
  static constexpr float shifter = 12582912.0f;  // 1.5 * 2^23
  static constexpr int mant = 23, bias = 127;
};

template <>
struct ExpConst<double> {
  using I = int64_t;
  static constexpr double lo = -708.0, hi = 709.0;
  static constexpr double log2e = 1.4426950408889634074;
  static constexpr double ln2_hi = 0.693147180369123816490, ln2_lo = 1.90821492927058770002e-10;
  static constexpr double shifter = 6755399441055744.0;  // 1.5 * 2^52
  static constexpr int mant = 52, bias = 1023;
};

template <typename T>
inline T vexp(T x) {
  using C = ExpConst<T>;
  using I = typename C::I;
  x = x < C::lo ? C::lo : x;
  x = x > C::hi ? C::hi : x;
  T t = x * C::log2e + C::shifter;  // n = round(x / ln2) in the low mantissa bits of t
  T n = t - C::shifter;
  T r = x - n * C::ln2_hi;
  r = r - n * C::ln2_lo;
  T p;
  if constexpr (std::is_same_v<T, float>) {
    p = 1.f / 5040;
    p = p * r + 1.f / 720;
    p = p * r + 1.f / 120;
    p = p * r + 1.f / 24;
    p = p * r + 1.f / 6;
    p = p * r + 0.5f;
    p = p * r + 1.f;
    p = p * r + 1.f;
  } else {
    p = 1.0 / 6227020800.0;
    p = p * r + 1.0 / 479001600.0;
    p = p * r + 1.0 / 39916800.0;
    p = p * r + 1.0 / 3628800.0;
    p = p * r + 1.0 / 362880.0;
    p = p * r + 1.0 / 40320.0;
    p = p * r + 1.0 / 5040.0;
    p = p * r + 1.0 / 720.0;
    p = p * r + 1.0 / 120.0;
    p = p * r + 1.0 / 24.0;
    p = p * r + 1.0 / 6.0;
    p = p * r + 0.5;
    p = p * r + 1.0;
    p = p * r + 1.0;
  }
  I ti;
  std::memcpy(&ti, &t, sizeof(T));
  // The low bits of t hold n (two's complement); shift it into the exponent field.
  I scale_bits = (ti + C::bias) << C::mant;
  T scale;
  std::memcpy(&scale, &scale_bits, sizeof(T));
  return p * scale;
}

template <typename T>
inline T vsigmoid(T x) {
  return T(1) / (T(1) + vexp(-x));
}

template <typename T>
inline T vtanh(T x) {
  T a = x < T(0) ? -x : x;
  T y = T(1) - T(2) / (vexp(T(2) * a) + T(1));
  return x < T(0) ? -y : y;
}

}  // namespace seqnorm
