"""Helpers shared by the positional encodings."""

from __future__ import annotations


def check_length(seq_len: int, offset: int, max_len: int, owner: str) -> None:
    """Raise if positions ``offset .. offset + seq_len - 1`` do not fit in ``max_len``."""
    if offset < 0 or offset + seq_len > max_len:
        raise ValueError(
            f"{owner} supports positions 0..{max_len - 1} (max_len={max_len}); got a sequence "
            f"of length {seq_len} at offset {offset}. Build it with a larger max_len."
        )
