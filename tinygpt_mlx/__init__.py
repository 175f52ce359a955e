"""tinygpt_mlx: a small-language-model lab native to Apple MLX."""

import sys

if sys.platform.startswith("linux"):
    from tinygpt_mlx.cpu.blas import ensure_fast_blas

    # Must run before anything imports mlx.core, so that MLX binds to the fast cblas symbols.
    ensure_fast_blas()

__version__ = "0.1.0"
