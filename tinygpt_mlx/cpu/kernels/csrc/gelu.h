// Primitives behind tinygpt_mlx.kernels gelu (see gelu.cpp for the why).
#pragma once

#include "mlx/array.h"
#include "mlx/primitives.h"

namespace tinygpt {

// GPT-2's gelu_new: 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))), float32.
mlx::core::array gelu(const mlx::core::array& x);

class Gelu : public mlx::core::UnaryPrimitive {
 public:
  explicit Gelu(mlx::core::Stream stream) : mlx::core::UnaryPrimitive(stream) {}
  void eval_cpu(const std::vector<mlx::core::array>& inputs, mlx::core::array& out) override;
  void eval_gpu(const std::vector<mlx::core::array>& inputs, mlx::core::array& out) override;
  std::vector<mlx::core::array> vjp(const std::vector<mlx::core::array>& primals,
                                    const std::vector<mlx::core::array>& cotangents,
                                    const std::vector<int>& argnums,
                                    const std::vector<mlx::core::array>& outputs) override;
  std::vector<mlx::core::Shape> output_shapes(const std::vector<mlx::core::array>& inputs) override;
  const char* name() const override { return "TinyGPTGelu"; }
  bool is_equivalent(const mlx::core::Primitive&) const override { return true; }
};

class GeluBackward : public mlx::core::UnaryPrimitive {
 public:
  explicit GeluBackward(mlx::core::Stream stream) : mlx::core::UnaryPrimitive(stream) {}
  void eval_cpu(const std::vector<mlx::core::array>& inputs, mlx::core::array& out) override;
  void eval_gpu(const std::vector<mlx::core::array>& inputs, mlx::core::array& out) override;
  const char* name() const override { return "TinyGPTGeluBackward"; }
  bool is_equivalent(const mlx::core::Primitive&) const override { return true; }
};

}  // namespace tinygpt
