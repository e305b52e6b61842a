"""The step interface for decoder-only language models (GPT): prefill, then one token at a time.

:class:`DecoderOnlyAdapter` turns a causal language model into a
:class:`~attnkit.generation.DecodingModel`. Prompts may have different
lengths: they are *left*-padded and come with an attention mask, and every
row's positions count its real tokens only (``cumsum(mask) - 1``), so a
padded prompt continues exactly as the same prompt alone would.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

import torch
from torch import Tensor

from attnkit.functional import positions_from_mask

__all__ = ["CausalLanguageModel", "DecoderOnlyAdapter", "DecoderOnlyState", "is_causal_lm"]


class CausalLanguageModel(Protocol):
    """What decoding needs of a decoder-only model (e.g. ``attnkit.models.GPT``).

    ``model(input_ids (N, t), attention_mask=(N, T_total) bool, positions=(N, t),
    cache=...)`` returns an object with ``logits (N, t, V)``; ``new_cache``
    allocates the per-layer KV caches. An optional ``max_positions`` attribute
    (``int`` or ``None``) is the size of the model's position table: decoding then
    checks up front that every position it will feed lies below it.
    """

    def __call__(
        self,
        input_ids: Tensor,
        attention_mask: Tensor | None = None,
        *,
        positions: Tensor | None = None,
        cache: Any | None = None,
    ) -> Any: ...

    def new_cache(self, batch_size: int, max_len: int) -> Any: ...


def is_causal_lm(model: Any) -> bool:
    """Whether ``model`` looks like a decoder-only LM (``new_cache``, no ``encode``)."""
    return hasattr(model, "new_cache") and not hasattr(model, "encode")


def _check_prompts(input_ids: Tensor, attention_mask: Tensor | None) -> Tensor:
    """The bool ``(B, P)`` mask of left-padded prompts; raise on anything else."""
    if not isinstance(input_ids, Tensor) or input_ids.dim() != 2 or input_ids.size(1) == 0:
        shape = tuple(input_ids.shape) if isinstance(input_ids, Tensor) else type(input_ids)
        raise ValueError(f"input_ids must have shape (B, P) with P >= 1; got {shape}")
    if attention_mask is None:
        return torch.ones_like(input_ids, dtype=torch.bool)
    if attention_mask.shape != input_ids.shape:
        raise ValueError(
            f"attention_mask must have the shape of input_ids {tuple(input_ids.shape)}; "
            f"got {tuple(attention_mask.shape)}"
        )
    mask = attention_mask.bool()
    # Left padding: once a row's real tokens start, they run to the end.
    if bool((mask[:, :-1] & ~mask[:, 1:]).any()):
        raise ValueError(
            "prompts must be left-padded (padding first, real tokens last); "
            "attention_mask has a padding position after a real token"
        )
    if not bool(mask[:, -1].all()):
        raise ValueError("every prompt needs at least one real token; a row is all padding")
    return mask


@dataclass
class DecoderOnlyState:
    """Decoding state of :class:`DecoderOnlyAdapter`.

    Attributes:
        tokens: ``(N, T)`` every token fed so far (prompts included).
        mask: ``(N, T)`` bool, ``True`` at real tokens.
        next_position: ``(N,)`` position of each row's next token.
        cache: the model's KV caches, or ``None`` without a cache.

    Example:
        >>> import torch
        >>> from attnkit.generation import DecoderOnlyAdapter, DecoderOnlyState
        >>> from attnkit.models import GPT, GPTConfig
        >>> gpt = GPT(GPTConfig(vocab_size=50, max_len=16, d_model=32, num_heads=4, num_layers=1))
        >>> prompts = torch.tensor([[0, 5, 6], [7, 8, 9]])  # row 0 is left-padded
        >>> adapter = DecoderOnlyAdapter(gpt.eval(), prompts, prompts != 0)
        >>> state, _ = adapter.start(num_beams=1, max_new_tokens=3)
        >>> isinstance(state, DecoderOnlyState), state.next_position.tolist()  # real tokens only
        (True, [2, 3])
        >>> _ = adapter.step(state, torch.tensor([[1], [1]]))  # one more token per row
        >>> tuple(state.tokens.shape), state.mask[0].tolist(), state.next_position.tolist()
        ((2, 4), [False, True, True, True], [3, 4])
    """

    tokens: Tensor
    mask: Tensor
    next_position: Tensor
    cache: Any | None


class DecoderOnlyAdapter:
    """:class:`~attnkit.generation.DecodingModel` for a causal LM over left-padded prompts.

    ``start`` runs the prompts through the model once (prefill, filling the
    KV cache) and each ``step`` feeds only the new tokens. Without
    ``use_cache`` every step reruns all tokens so far (slower, same tokens).

    Args:
        model: a :class:`CausalLanguageModel`.
        input_ids: ``(B, P)`` prompts, left-padded.
        attention_mask: ``(B, P)``, ``True``/1 at real tokens (default: all real).
        use_cache: decode incrementally with the KV cache.

    Example:
        >>> import torch
        >>> from attnkit.generation import DecoderOnlyAdapter
        >>> from attnkit.models import GPT, GPTConfig
        >>> gpt = GPT(GPTConfig(vocab_size=50, max_len=16, d_model=32, num_heads=4, num_layers=2))
        >>> prompts = torch.tensor([[0, 0, 5, 6], [7, 8, 9, 10]])  # row 0 is left-padded
        >>> adapter = DecoderOnlyAdapter(gpt.eval(), prompts, prompts != 0)
        >>> state, logits = adapter.start(num_beams=2, max_new_tokens=4)  # N = B * 2 rows
        >>> tuple(logits.shape), tuple(adapter.step(state, logits.argmax(-1, keepdim=True)).shape)
        ((4, 50), (4, 50))
        >>> alone = gpt(torch.tensor([[5, 6]])).logits[0, -1]  # the padded prompt, unpadded
        >>> torch.allclose(logits[0], alone, atol=1e-5)
        True
    """

    def __init__(
        self,
        model: CausalLanguageModel,
        input_ids: Tensor,
        attention_mask: Tensor | None = None,
        *,
        use_cache: bool = True,
    ) -> None:
        self.mask = _check_prompts(input_ids, attention_mask)
        self.padded = not bool(self.mask.all())
        self.model = model
        self.input_ids = input_ids
        self.use_cache = use_cache

    @property
    def batch_size(self) -> int:
        return self.input_ids.size(0)

    @property
    def device(self) -> torch.device:
        return self.input_ids.device

    def start(
        self, num_beams: int, max_new_tokens: int, *, bos_id: int | None = None
    ) -> tuple[DecoderOnlyState, Tensor]:
        """Prefill ``num_beams`` copies of every prompt; ``bos_id`` is not used.

        Returns the state and ``(N, V)`` logits of the first generated token.
        """
        if num_beams < 1 or max_new_tokens < 1:
            raise ValueError(
                f"num_beams and max_new_tokens must be >= 1; got {num_beams} and {max_new_tokens}"
            )
        self._check_fits(max_new_tokens)
        tokens = self.input_ids.repeat_interleave(num_beams, dim=0)
        mask = self.mask.repeat_interleave(num_beams, dim=0)
        positions = positions_from_mask(mask)
        cache = None
        if self.use_cache:
            cache = self.model.new_cache(tokens.size(0), tokens.size(1) + max_new_tokens)
        out = self._forward(tokens, mask, positions, cache)
        state = DecoderOnlyState(tokens, mask, positions[:, -1] + 1, cache)
        return state, out.logits[:, -1]

    def _check_fits(self, max_new_tokens: int) -> None:
        """Raise before any decoding if a position to feed exceeds the model's table.

        A prompt of ``P`` real tokens holds positions ``0 .. P - 1``; the new tokens
        follow it, and all but the last are fed back, up to position
        ``P + max_new_tokens - 2``.
        """
        limit = getattr(self.model, "max_positions", None)
        if limit is None:
            return
        prompt = int(self.mask.sum(dim=1).max())
        last = prompt + max_new_tokens - 2
        if prompt > limit:
            raise ValueError(
                f"the longest prompt has {prompt} real tokens, more than the model's "
                f"max_len={limit} positions"
            )
        if last >= limit:
            raise ValueError(
                f"a prompt of {prompt} real tokens + max_new_tokens={max_new_tokens} would feed "
                f"positions up to {last}, beyond the model's max_len={limit} (positions "
                f"0..{limit - 1}); ask for at most {limit - prompt + 1} new tokens"
            )

    def _forward(self, tokens: Tensor, mask: Tensor, positions: Tensor, cache: Any | None):
        """The model on ``tokens``; without padding, no mask and no position ids are
        needed (every row counts from 0), which keeps attention on its fastest path."""
        if self.padded:
            return self.model(tokens, mask, positions=positions, cache=cache)
        return self.model(tokens, cache=cache)

    def step(self, state: DecoderOnlyState, tokens: Tensor) -> Tensor:
        """Feed ``tokens (N, t)``; return ``(N, V)`` logits of the next token."""
        new = tokens.size(1)
        positions = state.next_position[:, None] + torch.arange(new, device=tokens.device)
        state.tokens = torch.cat([state.tokens, tokens], dim=1)
        state.mask = torch.cat([state.mask, torch.ones_like(tokens, dtype=torch.bool)], dim=1)
        state.next_position = state.next_position + new
        if state.cache is not None:
            out = self._forward(tokens, state.mask, positions, state.cache)
        else:
            out = self._forward(state.tokens, state.mask, positions_from_mask(state.mask), None)
        return out.logits[:, -1]

    def reorder(self, state: DecoderOnlyState, indices: Tensor) -> None:
        """Keep rows ``indices (N,)`` of tokens, mask, positions and caches."""
        state.tokens = state.tokens.index_select(0, indices)
        state.mask = state.mask.index_select(0, indices)
        state.next_position = state.next_position.index_select(0, indices)
        if state.cache is not None:
            state.cache.reorder(indices)
