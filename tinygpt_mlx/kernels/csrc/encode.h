// What every eval_cpu here does before its work is queued: allocate the outputs, register the arrays.
#pragma once

#include <vector>

#include "mlx/allocator.h"
#include "mlx/array.h"
#include "mlx/backend/cpu/encoder.h"

namespace tinygpt {

inline mlx::core::cpu::CommandEncoder& prepare(mlx::core::Stream stream, const std::vector<mlx::core::array>& inputs,
                                               std::vector<mlx::core::array*> outputs) {
  auto& encoder = mlx::core::cpu::get_command_encoder(stream);
  for (const auto& a : inputs) encoder.set_input_array(a);
  for (auto* out : outputs) {
    out->set_data(mlx::core::allocator::malloc(out->nbytes()));
    encoder.set_output_array(*out);
  }
  return encoder;
}

}  // namespace tinygpt
