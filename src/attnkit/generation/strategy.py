"""``generate``: one entry point that dispatches to a decoding strategy by name."""

from __future__ import annotations

from typing import Any, Literal

from torch import Tensor

from attnkit.generation.beam import BeamSearchOutput, beam_search
from attnkit.generation.greedy import greedy_decode
from attnkit.generation.sampling import sample

__all__ = ["STRATEGIES", "Strategy", "generate"]

Strategy = Literal["greedy", "beam", "sample"]
STRATEGIES = {"greedy": greedy_decode, "beam": beam_search, "sample": sample}


def generate(
    model: Any, src: Tensor | None, strategy: Strategy = "greedy", **kwargs: Any
) -> Tensor | BeamSearchOutput:
    """Decode with ``strategy``: ``"greedy"``, ``"beam"`` or ``"sample"``.

    ``kwargs`` go to :func:`greedy_decode`, :func:`beam_search` or :func:`sample`
    (``max_new_tokens``, ``bos_id``, ``eos_id`` are always required). Returns
    ``(B, L)`` ids, or a :class:`BeamSearchOutput` for ``"beam"``.
    """
    if strategy not in STRATEGIES:
        raise ValueError(f"strategy must be one of {sorted(STRATEGIES)}; got {strategy!r}")
    return STRATEGIES[strategy](model, src, **kwargs)
