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

    Example:
        >>> import torch
        >>> from attnkit.generation import generate
        >>> from attnkit.models import GPT, GPTConfig
        >>> gpt = GPT(GPTConfig(vocab_size=50, max_len=32, d_model=32, num_heads=4, num_layers=1))
        >>> prompt = torch.randint(0, 50, (2, 4))
        >>> tuple(generate(gpt.eval(), prompt, "greedy", max_new_tokens=5, eos_id=None).shape)
        (2, 5)
        >>> beams = generate(gpt, prompt, "beam", beam_size=3, max_new_tokens=5, eos_id=0)
        >>> tuple(beams.sequences.shape[:2])  # (B, num_return_sequences)
        (2, 1)
    """
    if strategy not in STRATEGIES:
        raise ValueError(f"strategy must be one of {sorted(STRATEGIES)}; got {strategy!r}")
    return STRATEGIES[strategy](model, src, **kwargs)
