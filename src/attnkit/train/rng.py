"""Seeding and capturing every random generator a training run touches."""

from __future__ import annotations

import random
from typing import Any

import numpy as np
import torch

__all__ = ["capture_rng_state", "restore_rng_state", "seed_everything"]


def seed_everything(seed: int) -> None:
    """Seed Python's ``random``, NumPy's global generator and torch (CPU and CUDA).

    NumPy takes the seed modulo ``2**32``.

    Example:
        >>> import random
        >>> import numpy as np
        >>> import torch
        >>> from attnkit.train import seed_everything
        >>> def draws():
        ...     return random.random(), np.random.rand(), torch.rand(()).item()
        >>> seed_everything(1234)
        >>> first = draws()
        >>> seed_everything(1234)
        >>> draws() == first
        True
    """
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def capture_rng_state() -> dict[str, Any]:
    """Python, NumPy, torch CPU and (if initialised) CUDA generator states.

    The result holds only lists, numbers, strings and tensors, so it can be saved
    in ``trainer_state.pt`` and read back with ``torch.load(weights_only=True)``.

    Example:
        >>> import io
        >>> import torch
        >>> from attnkit.train import capture_rng_state
        >>> state = capture_rng_state()
        >>> {"python", "numpy", "torch"} <= set(state)  # plus "cuda" once CUDA is in use
        True
        >>> buffer = io.BytesIO()
        >>> torch.save(state, buffer)
        >>> _ = buffer.seek(0)
        >>> torch.equal(torch.load(buffer, weights_only=True)["torch"], state["torch"])
        True
    """
    version, mt_state, python_gauss = random.getstate()
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    state: dict[str, Any] = {
        "python": [version, list(mt_state), python_gauss],
        "numpy": {
            "kind": kind,
            "keys": torch.from_numpy(keys.astype(np.int64)),
            "pos": int(pos),
            "has_gauss": int(has_gauss),
            "gauss": float(gauss),
        },
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng_state(state: dict[str, Any]) -> None:
    """Inverse of :func:`capture_rng_state`: the generators continue from where
    they were captured (CUDA only if the state has it and CUDA is available).

    Example:
        >>> import random
        >>> import numpy as np
        >>> import torch
        >>> from attnkit.train import capture_rng_state, restore_rng_state
        >>> state = capture_rng_state()
        >>> first = (random.random(), np.random.rand(), torch.rand(3).tolist())
        >>> restore_rng_state(state)
        >>> (random.random(), np.random.rand(), torch.rand(3).tolist()) == first
        True
    """
    version, mt_state, gauss = state["python"]
    random.setstate((version, tuple(mt_state), gauss))
    numpy_state = state["numpy"]
    keys = numpy_state["keys"].numpy().astype(np.uint32)
    np.random.set_state(
        (
            numpy_state["kind"],
            keys,
            numpy_state["pos"],
            numpy_state["has_gauss"],
            numpy_state["gauss"],
        )
    )
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
