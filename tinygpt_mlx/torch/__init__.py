"""The PyTorch path: the same configs, data, schedule and checkpoint folders, trained with torch (CUDA or CPU).

Only the model (`model.py`), the optimizer and its state mapping (`optim.py`) and the step (`step.py`) are
torch's own; `backend.py` hands them to the one training loop (train/trainer.py), which is shared.
This package never imports torch itself: the modules below do, so `import tinygpt_mlx` stays torch-free.
"""

from __future__ import annotations

from tinygpt_mlx.errors import UserError

INSTALL_HINT = "pip install -e '.[torch]'"


def require_torch() -> None:
    """Raise a one-line UserError telling how to install the extra when torch cannot be imported."""
    try:
        import torch  # noqa: F401 - absolute import: the real torch, not this package
    except ImportError as err:
        raise UserError(f"--backend torch needs PyTorch, which is not installed ({err}); "
                        f"install the extra: {INSTALL_HINT}") from None
