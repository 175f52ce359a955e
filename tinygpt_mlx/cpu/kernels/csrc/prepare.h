// What every eval_cpu here does before its work: wait for its inputs, then allocate its outputs.
//
// MLX evaluates a graph by calling each primitive's eval_cpu on the evaluating thread, in order, and each
// of MLX's own CPU ops queues its work on the stream's thread. Our kernels compute right here instead,
// so they first wait until the stream has run everything queued so far (their inputs among it). That
// takes only MLX's public API (mlx::core::synchronize, allocator::malloc); queueing our work on the
// stream would take its internal CPU command encoder, whose header changes with MLX releases. The wait
// costs a thread hand-off per kernel call, microseconds against the milliseconds each kernel computes.
#pragma once

#include <vector>

#include "mlx/allocator.h"
#include "mlx/array.h"
#include "mlx/stream.h"

namespace tinygpt {

inline void prepare(mlx::core::Stream stream, const std::vector<mlx::core::array*>& outputs) {
  mlx::core::synchronize(stream);
  for (auto* out : outputs) out->set_data(mlx::core::allocator::malloc(out->nbytes()));
}

}  // namespace tinygpt
