// Python module of tinygpt_mlx.kernels; shares MLX's nanobind domain so mx.array crosses unchanged.
#include <nanobind/nanobind.h>

#include "attention.h"
#include "gelu.h"
#include "layer_norm.h"

namespace nb = nanobind;

NB_MODULE(_tinygpt_kernels, m) {
  m.doc() = "Fused CPU kernels for TinyGPT training (built on first use by tinygpt_mlx.kernels).";
  m.def("causal_self_attention", &tinygpt::causal_self_attention, nb::arg("qkv"), nb::arg("heads"),
        nb::arg("scale"),
        "Causal multi-head attention of qkv [B, T, 3C] (q, k, v concatenated) -> [B, T, C], float32, CPU.");
  m.def("layer_norm", &tinygpt::layer_norm, nb::arg("x"), nb::arg("weight"), nb::arg("bias"), nb::arg("eps"),
        "Layer norm over the last axis with weight and bias [d], float32, CPU.");
  m.def("gelu", &tinygpt::gelu, nb::arg("x"), "GELU, tanh approximation (GPT-2's gelu_new), float32, CPU.");
}
