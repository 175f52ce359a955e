// Primitives behind tinygpt_mlx.kernels layer_norm (see layer_norm.cpp for the why).
#pragma once

#include "mlx/array.h"
#include "mlx/primitives.h"

namespace tinygpt {

// (x - mean) / sqrt(var + eps) * weight + bias over the last axis, float32.
mlx::core::array layer_norm(const mlx::core::array& x, const mlx::core::array& weight,
                            const mlx::core::array& bias, float eps);

class LayerNorm : public mlx::core::Primitive {
 public:
  LayerNorm(mlx::core::Stream stream, float eps) : mlx::core::Primitive(stream), eps_(eps) {}
  void eval_cpu(const std::vector<mlx::core::array>& inputs, std::vector<mlx::core::array>& outputs) override;
  void eval_gpu(const std::vector<mlx::core::array>& inputs, std::vector<mlx::core::array>& outputs) override;
  std::vector<mlx::core::array> vjp(const std::vector<mlx::core::array>& primals,
                                    const std::vector<mlx::core::array>& cotangents,
                                    const std::vector<int>& argnums,
                                    const std::vector<mlx::core::array>& outputs) override;
  std::vector<mlx::core::Shape> output_shapes(const std::vector<mlx::core::array>& inputs) override;
  const char* name() const override { return "TinyGPTLayerNorm"; }
  bool is_equivalent(const mlx::core::Primitive& other) const override;

 private:
  float eps_;
};

class LayerNormBackward : public mlx::core::Primitive {
 public:
  explicit LayerNormBackward(mlx::core::Stream stream) : mlx::core::Primitive(stream) {}
  void eval_cpu(const std::vector<mlx::core::array>& inputs, std::vector<mlx::core::array>& outputs) override;
  void eval_gpu(const std::vector<mlx::core::array>& inputs, std::vector<mlx::core::array>& outputs) override;
  const char* name() const override { return "TinyGPTLayerNormBackward"; }
  bool is_equivalent(const mlx::core::Primitive&) const override { return true; }
};

}  // namespace tinygpt
