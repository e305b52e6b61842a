"""Key/value caches for incremental decoding.

``KVCache`` is preallocated for self-attention: every decoding step writes its
new keys/values into the next free slots and attention reads the filled
prefix. ``StaticKVCache`` holds cross-attention keys/values, computed once from
the encoder memory and reused at every step.
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["KVCache", "KVCacheStack", "StaticKVCache"]


class KVCache:
    """Growing self-attention cache, preallocated to ``max_len`` positions.

    Buffers have shape ``(B, Hkv, max_len, Dh)``; ``length`` positions are filled.
    ``dtype`` is only where the buffers start: they take the dtype of the keys
    and values written into them (under ``torch.autocast`` the projections give
    bf16/fp16 keys while the parameters are fp32), so attention always reads
    keys and values in the dtype it computes in.

    Example:
        >>> import torch
        >>> from attnkit.nn import KVCache
        >>> cache = KVCache(batch_size=1, num_kv_heads=2, max_len=10, head_dim=4)
        >>> _ = cache.update(torch.randn(1, 2, 3, 4), torch.randn(1, 2, 3, 4))  # a 3-token prompt
        >>> keys, values = cache.update(torch.randn(1, 2, 1, 4), torch.randn(1, 2, 1, 4))  # 1 step
        >>> tuple(keys.shape), cache.length
        ((1, 2, 4, 4), 4)
    """

    static = False

    def __init__(
        self,
        batch_size: int,
        num_kv_heads: int,
        max_len: int,
        head_dim: int,
        *,
        value_dim: int | None = None,
        dtype: torch.dtype = torch.float32,
        device: torch.device | str | None = None,
    ) -> None:
        shape = (batch_size, num_kv_heads, max_len, head_dim)
        self.key = torch.zeros(shape, dtype=dtype, device=device)
        self.value = torch.zeros((*shape[:-1], value_dim or head_dim), dtype=dtype, device=device)
        self.length = 0

    @property
    def max_len(self) -> int:
        return self.key.size(2)

    def update(self, key: Tensor, value: Tensor) -> tuple[Tensor, Tensor]:
        """Append ``(B, Hkv, t, Dh)`` keys/values; return all filled ``(B, Hkv, length, Dh)``."""
        if (
            key.dim() != 4
            or key.shape[:2] != self.key.shape[:2]
            or key.size(-1) != self.key.size(-1)
        ):
            raise ValueError(
                f"key must have shape (B, Hkv, t, Dh) with (B, Hkv, Dh) = "
                f"{(self.key.size(0), self.key.size(1), self.key.size(3))}; got {tuple(key.shape)}"
            )
        expected_value = (*key.shape[:3], self.value.size(-1))
        if value.shape != expected_value:
            raise ValueError(
                f"value must have shape (B, Hkv, t, Dv) = {expected_value}; "
                f"got {tuple(value.shape)}"
            )
        end = self.length + key.size(2)
        if end > self.max_len:
            raise ValueError(
                f"KV cache overflow: {self.length} cached + {key.size(2)} new positions exceed "
                f"max_len={self.max_len}"
            )
        self._follow_dtypes(key, value)
        self.key[:, :, self.length : end] = key
        self.value[:, :, self.length : end] = value
        self.length = end
        return self.key[:, :, :end], self.value[:, :, :end]

    def _follow_dtypes(self, key: Tensor, value: Tensor) -> None:
        """Convert the buffers (and what they hold) to the dtypes of ``key`` and ``value``."""
        if self.key.dtype != key.dtype:
            self.key = self.key.to(key.dtype)
        if self.value.dtype != value.dtype:
            self.value = self.value.to(value.dtype)

    def reorder(self, indices: Tensor) -> None:
        """Select batch rows (e.g. surviving beams) in place: ``indices (B,)``."""
        self.key = self.key.index_select(0, indices)
        self.value = self.value.index_select(0, indices)

    def reset(self) -> None:
        self.length = 0


class StaticKVCache:
    """Cross-attention cache: keys/values of the encoder memory, computed once.

    Example:
        >>> import torch
        >>> from attnkit.nn import StaticKVCache
        >>> cache = StaticKVCache()
        >>> _ = cache.update(torch.randn(1, 2, 7, 4), torch.randn(1, 2, 7, 4))  # encoder memory
        >>> cache.ready, cache.length
        (True, 7)
    """

    static = True

    def __init__(self) -> None:
        self.key: Tensor | None = None
        self.value: Tensor | None = None

    @property
    def ready(self) -> bool:
        return self.key is not None

    @property
    def length(self) -> int:
        return 0 if self.key is None else self.key.size(2)

    def update(self, key: Tensor, value: Tensor) -> tuple[Tensor, Tensor]:
        """Store ``(B, Hkv, S, Dh)`` keys/values (first call) and return them."""
        self.key, self.value = key, value
        return key, value

    def reorder(self, indices: Tensor) -> None:
        if self.key is not None and self.value is not None:
            self.key = self.key.index_select(0, indices)
            self.value = self.value.index_select(0, indices)

    def reset(self) -> None:
        self.key = self.value = None


class KVCacheStack:
    """One :class:`KVCache` per self-attention layer of a decoder-only stack (GPT).

    ``length`` = positions cached so far; ``reorder`` selects batch rows in
    every layer (beam search).

    Example:
        >>> import torch
        >>> from attnkit.nn import KVCache, KVCacheStack
        >>> stack = KVCacheStack([KVCache(1, 2, 10, 4) for _ in range(3)])  # 3 layers
        >>> _ = stack[0].update(torch.randn(1, 2, 2, 4), torch.randn(1, 2, 2, 4))
        >>> len(stack), stack.length
        (3, 2)
    """

    def __init__(self, layers: list[KVCache]) -> None:
        self.layers = layers

    def __getitem__(self, index: int) -> KVCache:
        return self.layers[index]

    def __len__(self) -> int:
        return len(self.layers)

    @property
    def length(self) -> int:
        return self.layers[0].length if self.layers else 0

    def reorder(self, indices: Tensor) -> None:
        for layer in self.layers:
            layer.reorder(indices)

    def reset(self) -> None:
        for layer in self.layers:
            layer.reset()
