// Fused causal self-attention for MLX's CPU backend: qkv [B, T, 3C] in, y [B, T, C] out.
//
// Why: on the CPU, attention written with MLX ops keeps the [T, T] probabilities of every head for the
// backward pass, walks them several times with scalar loops, and splits/merges heads with copies. Here
// each (batch, head) is done in query blocks that stay in cache: scores by cblas_sgemm, a vectorised
// softmax, and only the row log-sum-exp is kept; the backward recomputes the probabilities from it
// (as FlashAttention does). Heads are read and written in place through the GEMMs' leading dimensions,
// so there is no split, transpose or concatenate, in either direction.
#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <stdexcept>
#include <vector>

#include "mlx/array.h"
#include "mlx/ops.h"
#include "mlx/primitives.h"
#include "mlx/utils.h"

#include "attention.h"
#include "prepare.h"

extern "C" void cblas_sgemm(int order, int trans_a, int trans_b, int m, int n, int k, float alpha,
                            const float* a, int lda, const float* b, int ldb, float beta, float* c,
                            int ldc);

namespace tinygpt {

namespace mx = mlx::core;

namespace {

constexpr int kRowMajor = 101, kNoTrans = 111, kTrans = 112;
constexpr int kBlock = 64;  // query rows per block: scores of a block are at most 64 x T floats

void gemm(bool ta, bool tb, int m, int n, int k, const float* a, int lda, const float* b, int ldb,
          float beta, float* c, int ldc) {
  cblas_sgemm(kRowMajor, ta ? kTrans : kNoTrans, tb ? kTrans : kNoTrans, m, n, k, 1.0f, a, lda, b,
              ldb, beta, c, ldc);
}

// exp(x) for x <= 0 as plain arithmetic, so the compiler vectorises the loops that call it:
// x = n ln2 + r with |r| <= ln2 / 2, exp(r) by a degree-6 Taylor polynomial (relative error < 3e-7),
// 2^n by building the float's exponent bits. Below -87 the result is 0 for all purposes (clamped).
inline float exp_nonpositive(float x) {
  x = x < -87.0f ? -87.0f : x;  // a ternary, not std::fmax: GCC vectorises only the former
  const float n = std::floor(x * 1.44269504088896341f + 0.5f);
  const float r = (x - n * 0.693145751953125f) - n * 1.428606765330187e-06f;
  float p = 1.0f / 720.0f;
  p = p * r + 1.0f / 120.0f;
  p = p * r + 1.0f / 24.0f;
  p = p * r + 1.0f / 6.0f;
  p = p * r + 0.5f;
  p = p * r + 1.0f;
  p = p * r + 1.0f;
  const int bits = (static_cast<int>(n) + 127) << 23;
  float scale;
  std::memcpy(&scale, &bits, sizeof(scale));
  return p * scale;
}

struct Dims {
  int batch, seq, heads, head_dim;
  int width() const { return heads * head_dim; }
};

Dims dims_of(const mx::array& qkv, int heads) {
  const int c = static_cast<int>(qkv.shape(2)) / 3;
  return {static_cast<int>(qkv.shape(0)), static_cast<int>(qkv.shape(1)), heads, c / heads};
}

// Softmax of one block's scores in place; keys beyond each row's causal limit become 0. The log-sum-exp
// of each row goes to lse (in the scaled units the backward uses). The shift by max * scale needs scale > 0.
void softmax_block(float* s, int rows, int cols, int first_row, float scale, float* lse) {
  for (int r = 0; r < rows; ++r) {
    float* row = s + static_cast<size_t>(r) * cols;
    const int valid = first_row + r + 1;
    float mx_ = std::numeric_limits<float>::lowest();
#pragma omp simd reduction(max : mx_)
    for (int j = 0; j < valid; ++j) mx_ = std::max(mx_, row[j]);
    const float shift = mx_ * scale;
    float sum = 0.0f;
#pragma omp simd reduction(+ : sum)
    for (int j = 0; j < valid; ++j) {
      const float e = exp_nonpositive(row[j] * scale - shift);
      row[j] = e;
      sum += e;
    }
    const float inv = 1.0f / sum;
    for (int j = 0; j < valid; ++j) row[j] *= inv;
    std::fill(row + valid, row + cols, 0.0f);
    lse[r] = shift + std::log(sum);
  }
}

void forward(const float* qkv, float* y, float* lse, Dims d, float scale) {
  const int c = d.width(), ld = 3 * c;
  std::vector<float> scores(static_cast<size_t>(kBlock) * d.seq);
  for (int b = 0; b < d.batch; ++b) {
    const float* base = qkv + static_cast<size_t>(b) * d.seq * ld;
    for (int h = 0; h < d.heads; ++h) {
      const float* q = base + h * d.head_dim;
      const float* k = q + c;
      const float* v = q + 2 * c;
      float* out = y + static_cast<size_t>(b) * d.seq * c + h * d.head_dim;
      float* lse_h = lse + (static_cast<size_t>(b) * d.heads + h) * d.seq;
      for (int i0 = 0; i0 < d.seq; i0 += kBlock) {
        const int rows = std::min(kBlock, d.seq - i0), keys = i0 + rows;
        gemm(false, true, rows, keys, d.head_dim, q + static_cast<size_t>(i0) * ld, ld, k, ld, 0.0f,
             scores.data(), keys);
        softmax_block(scores.data(), rows, keys, i0, scale, lse_h + i0);
        gemm(false, false, rows, d.head_dim, keys, scores.data(), keys, v, ld, 0.0f,
             out + static_cast<size_t>(i0) * c, c);
      }
    }
  }
}

void backward(const float* qkv, const float* lse, const float* dy, float* dqkv, Dims d,
              float scale) {
  const int c = d.width(), ld = 3 * c;
  std::vector<float> probs(static_cast<size_t>(kBlock) * d.seq), dprobs(probs.size());
  for (int b = 0; b < d.batch; ++b) {
    const float* base = qkv + static_cast<size_t>(b) * d.seq * ld;
    float* dbase = dqkv + static_cast<size_t>(b) * d.seq * ld;
    for (int t = 0; t < d.seq; ++t) std::fill(dbase + static_cast<size_t>(t) * ld + c,
                                              dbase + static_cast<size_t>(t + 1) * ld, 0.0f);
    for (int h = 0; h < d.heads; ++h) {
      const float* q = base + h * d.head_dim;
      const float* k = q + c;
      const float* v = q + 2 * c;
      float* dq = dbase + h * d.head_dim;
      float* dk = dq + c;
      float* dv = dq + 2 * c;
      const size_t off = static_cast<size_t>(b) * d.seq * c + h * d.head_dim;
      const float* g = dy + off;
      const float* lse_h = lse + (static_cast<size_t>(b) * d.heads + h) * d.seq;
      for (int i0 = 0; i0 < d.seq; i0 += kBlock) {
        const int rows = std::min(kBlock, d.seq - i0), keys = i0 + rows;
        const float* qb = q + static_cast<size_t>(i0) * ld;
        const float* gb = g + static_cast<size_t>(i0) * c;
        gemm(false, true, rows, keys, d.head_dim, qb, ld, k, ld, 0.0f, probs.data(), keys);
        gemm(false, true, rows, keys, d.head_dim, gb, c, v, ld, 0.0f, dprobs.data(), keys);
        for (int r = 0; r < rows; ++r) {
          float* p = probs.data() + static_cast<size_t>(r) * keys;
          float* dp = dprobs.data() + static_cast<size_t>(r) * keys;
          const int valid = i0 + r + 1;
          const float l = lse_h[i0 + r];
          // The row term sum_j P_ij dP_ij from the very P used below (not the equal-in-theory dy . y):
          // then each row of dS sums to zero up to rounding, as the exact gradient does. Parameters whose
          // true gradient is 0 (the key bias: softmax ignores a per-row shift) then get ~0, not noise
          // that Adam would blow up to full-size steps.
          float delta = 0.0f;
#pragma omp simd reduction(+ : delta)
          for (int j = 0; j < valid; ++j) {
            const float pj = exp_nonpositive(p[j] * scale - l);
            p[j] = pj;
            delta += pj * dp[j];
          }
          for (int j = 0; j < valid; ++j) dp[j] = p[j] * (dp[j] - delta) * scale;
          std::fill(p + valid, p + keys, 0.0f);
          std::fill(dp + valid, dp + keys, 0.0f);
        }
        gemm(false, false, rows, d.head_dim, keys, dprobs.data(), keys, k, ld, 0.0f,
             dq + static_cast<size_t>(i0) * ld, ld);
        gemm(true, false, keys, d.head_dim, rows, dprobs.data(), keys, qb, ld, 1.0f, dk, ld);
        gemm(true, false, keys, d.head_dim, rows, probs.data(), keys, gb, c, 1.0f, dv, ld);
      }
    }
  }
}

void check_input(const mx::array& qkv, int heads, float scale) {
  if (!(scale > 0.0f)) {
    throw std::invalid_argument("causal_self_attention: scale must be positive");
  }
  if (heads < 1 || qkv.ndim() != 3 || qkv.shape(2) % (3 * heads) != 0) {
    throw std::invalid_argument("causal_self_attention: qkv must be [B, T, 3 * heads * head_dim]");
  }
  if (qkv.dtype() != mx::float32) {
    throw std::invalid_argument("causal_self_attention: only float32 is supported");
  }
}

mx::array row_contiguous(const mx::array& a, mx::Stream s) {
  return mx::contiguous(a, false, s);
}

}  // namespace

void CausalSelfAttention::eval_cpu(const std::vector<mx::array>& inputs, std::vector<mx::array>& outputs) {
  auto& y = outputs[0];
  auto& lse = outputs[1];
  prepare(stream(), {&y, &lse});
  forward(inputs[0].data<float>(), y.data<float>(), lse.data<float>(), dims_of(inputs[0], heads_), scale_);
}

void CausalSelfAttention::eval_gpu(const std::vector<mx::array>&, std::vector<mx::array>&) {
  throw std::runtime_error("causal_self_attention runs on the CPU only");
}

std::vector<mx::array> CausalSelfAttention::vjp(const std::vector<mx::array>& primals,
                                                const std::vector<mx::array>& cotangents,
                                                const std::vector<int>&,
                                                const std::vector<mx::array>& outputs) {
  auto s = stream();
  auto dy = row_contiguous(cotangents[0], s);
  return {mx::array(primals[0].shape(), mx::float32,
                    std::make_shared<CausalSelfAttentionBackward>(s, heads_, scale_),
                    {primals[0], outputs[1], dy})};
}

bool CausalSelfAttention::is_equivalent(const mx::Primitive& other) const {
  const auto& o = static_cast<const CausalSelfAttention&>(other);
  return heads_ == o.heads_ && scale_ == o.scale_;
}

std::vector<mx::Shape> CausalSelfAttention::output_shapes(const std::vector<mx::array>& inputs) {
  const auto& qkv = inputs[0];
  return {{qkv.shape(0), qkv.shape(1), qkv.shape(2) / 3}, {qkv.shape(0), heads_, qkv.shape(1)}};
}

void CausalSelfAttentionBackward::eval_cpu(const std::vector<mx::array>& inputs, mx::array& out) {
  prepare(stream(), {&out});
  backward(inputs[0].data<float>(), inputs[1].data<float>(), inputs[2].data<float>(), out.data<float>(),
           dims_of(inputs[0], heads_), scale_);
}

void CausalSelfAttentionBackward::eval_gpu(const std::vector<mx::array>&, mx::array&) {
  throw std::runtime_error("causal_self_attention runs on the CPU only");
}

bool CausalSelfAttentionBackward::is_equivalent(const mx::Primitive& other) const {
  const auto& o = static_cast<const CausalSelfAttentionBackward&>(other);
  return heads_ == o.heads_ && scale_ == o.scale_;
}

mx::array causal_self_attention(const mx::array& qkv, int heads, float scale) {
  check_input(qkv, heads, scale);
  auto s = mx::to_stream({});
  auto x = row_contiguous(qkv, s);
  const auto& shape = x.shape();
  auto outs = mx::array::make_arrays({{shape[0], shape[1], shape[2] / 3}, {shape[0], heads, shape[1]}},
                                     {mx::float32, mx::float32},
                                     std::make_shared<CausalSelfAttention>(s, heads, scale), {x});
  return outs[0];
}

}  // namespace tinygpt
