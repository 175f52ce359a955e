"""GELU (tanh approximation) in multiply, add and divide only: the training GELU where the C++ kernels cannot build.

Why: MLX's CPU backend evaluates tanh and pow as scalar libm calls, about 25 ns per element, which makes
nn.gelu_approx the largest single cost of a CPU training step on the reference shape. Written with
arithmetic only, the same function compiles into one fused loop: tanh as Eigen's float32 rational
approximation (max error 4e-7 against tanh), x**3 as x*x*x, and an explicit backward. It agrees with
nn.gelu_approx to ~1e-6 (tests/cpu/test_gelu.py); a whole step runs 1.45-1.7x faster with it than with
nn.gelu_approx (kernels off, 4 lanes, reference shape), while the arithmetic exp that attention could
also use added only 0-4% on top, so this is the one pure-MLX fallback kept below the kernels.
"""

from __future__ import annotations

import math
from functools import partial

import mlx.core as mx

_GELU_C = math.sqrt(2 / math.pi)
_GELU_K = 0.044715
_TANH_CLAMP = 7.90531110763549805  # beyond this the rational form is exactly +-1 in float32
_TANH_P = (4.89352455891786e-03, 6.37261928875436e-04, 1.48572235717979e-05, 5.12229709037114e-08,
           -8.60467152213735e-11, 2.00018790482477e-13, -2.76076847742355e-16)
_TANH_Q = (4.89352518554385e-03, 2.26843463243900e-03, 1.18534705686654e-04, 1.19825839466702e-06)


def _tanh_rational(x: mx.array) -> mx.array:
    x = mx.clip(x, -_TANH_CLAMP, _TANH_CLAMP)
    x2 = x * x
    p = x2 * _TANH_P[6] + _TANH_P[5]
    for c in reversed(_TANH_P[:5]):
        p = x2 * p + c
    q = x2 * _TANH_Q[3] + _TANH_Q[2]
    for c in reversed(_TANH_Q[:2]):
        q = x2 * q + c
    return x * p / q


# Both directions are compiled shapeless, as mlx.nn.gelu_approx is: outside a compiled step the ~25
# elementwise ops would otherwise each be dispatched separately.
@partial(mx.compile, shapeless=True)
def _forward(x: mx.array) -> mx.array:
    x32 = x.astype(mx.float32)
    y = 0.5 * x32 * (1 + _tanh_rational(_GELU_C * (x32 + _GELU_K * (x32 * x32 * x32))))
    return y.astype(x.dtype)


@partial(mx.compile, shapeless=True)
def _backward(x: mx.array, cotangent: mx.array) -> mx.array:
    x = x.astype(mx.float32)
    # No subexpression here may equal one of the forward's: inside a compiled training step, identical
    # ops on the same inputs are merged, which keeps the forward's [tokens, 4 d] intermediate alive until
    # the backward. `x * x` and `0.5 * x` did that (~100 MB more peak memory on the reference shape), hence
    # mx.square and x multiplied last.
    x2 = mx.square(x)
    t = _tanh_rational(_GELU_C * x * (1 + _GELU_K * x2))
    slope = 0.5 * (1 + t) + x * (0.5 * (1 - t * t) * _GELU_C * (1 + 3 * _GELU_K * x2))
    return (cotangent.astype(mx.float32) * slope).astype(cotangent.dtype)


@mx.custom_function
def gelu_arith(x: mx.array) -> mx.array:
    """GPT-2's `gelu_new` (nn.gelu_approx) in arithmetic only, with its own backward; any float dtype."""
    return _forward(x)


@gelu_arith.vjp
def _gelu_arith_vjp(primals, cotangent, output):
    x = primals[0] if isinstance(primals, (list, tuple)) else primals
    return (_backward(x, cotangent),)
