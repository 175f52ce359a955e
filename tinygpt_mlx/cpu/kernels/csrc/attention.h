// Primitives behind tinygpt_mlx.kernels.causal_self_attention (see attention.cpp for the why).
#pragma once

#include "mlx/array.h"
#include "mlx/primitives.h"

namespace tinygpt {

// y = softmax(q k^T * scale + causal mask) v per head, for qkv = [q | k | v] of shape [B, T, 3C].
mlx::core::array causal_self_attention(const mlx::core::array& qkv, int heads, float scale);

class CausalSelfAttention : public mlx::core::Primitive {
 public:
  CausalSelfAttention(mlx::core::Stream stream, int heads, float scale)
      : mlx::core::Primitive(stream), heads_(heads), scale_(scale) {}
  void eval_cpu(const std::vector<mlx::core::array>& inputs, std::vector<mlx::core::array>& outputs) override;
  void eval_gpu(const std::vector<mlx::core::array>& inputs, std::vector<mlx::core::array>& outputs) override;
  std::vector<mlx::core::array> vjp(const std::vector<mlx::core::array>& primals,
                                    const std::vector<mlx::core::array>& cotangents,
                                    const std::vector<int>& argnums,
                                    const std::vector<mlx::core::array>& outputs) override;
  std::vector<mlx::core::Shape> output_shapes(const std::vector<mlx::core::array>& inputs) override;
  const char* name() const override { return "TinyGPTCausalSelfAttention"; }
  bool is_equivalent(const mlx::core::Primitive& other) const override;

 private:
  int heads_;
  float scale_;
};

class CausalSelfAttentionBackward : public mlx::core::UnaryPrimitive {
 public:
  CausalSelfAttentionBackward(mlx::core::Stream stream, int heads, float scale)
      : mlx::core::UnaryPrimitive(stream), heads_(heads), scale_(scale) {}
  void eval_cpu(const std::vector<mlx::core::array>& inputs, mlx::core::array& out) override;
  void eval_gpu(const std::vector<mlx::core::array>& inputs, mlx::core::array& out) override;
  const char* name() const override { return "TinyGPTCausalSelfAttentionBackward"; }
  bool is_equivalent(const mlx::core::Primitive& other) const override;

 private:
  int heads_;
  float scale_;
};

}  // namespace tinygpt
