"""Everything only MLX's CPU backend needs: a fast BLAS, lanes, fused C++ kernels, the malloc arena."""
