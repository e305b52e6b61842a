"""KVCache / StaticKVCache on their own and inside MultiHeadAttention's incremental decoding."""

import re

import pytest
import torch

from attnkit.nn import KVCache, MultiHeadAttention, StaticKVCache

F32 = dict(atol=1e-5, rtol=1e-5)

# --------------------------------------------------------------------------- KVCache alone


def test_kv_cache_appends_and_returns_the_filled_prefix():
    cache = KVCache(2, 3, 6, 4)
    assert cache.key.shape == (2, 3, 6, 4) and cache.max_len == 6 and cache.length == 0
    k1, v1 = torch.randn(2, 3, 2, 4), torch.randn(2, 3, 2, 4)
    k2, v2 = torch.randn(2, 3, 1, 4), torch.randn(2, 3, 1, 4)
    keys, values = cache.update(k1, v1)
    assert cache.length == 2
    assert torch.equal(keys, k1) and torch.equal(values, v1)
    keys, values = cache.update(k2, v2)
    assert cache.length == 3
    assert torch.equal(keys, torch.cat([k1, k2], 2))
    assert torch.equal(values, torch.cat([v1, v2], 2))


def test_kv_cache_dtype_device_and_value_dim():
    cache = KVCache(1, 2, 5, 4, value_dim=3, dtype=torch.float64, device="cpu")
    assert cache.key.dtype == torch.float64 and cache.key.device.type == "cpu"
    assert cache.value.shape == (1, 2, 5, 3)
    keys, values = cache.update(torch.randn(1, 2, 2, 4), torch.randn(1, 2, 2, 3))
    assert keys.shape == (1, 2, 2, 4) and values.shape == (1, 2, 2, 3)


def test_kv_cache_buffers_take_the_dtype_of_the_keys_written():
    """Under autocast the projections give bf16 keys while the buffers start in the
    parameters' fp32: attention must get bf16 back, not keys upcast to fp32."""
    cache = KVCache(2, 2, 5, 4, dtype=torch.float32)
    bf16 = dict(dtype=torch.bfloat16)
    k1, v1 = torch.randn(2, 2, 3, 4, **bf16), torch.randn(2, 2, 3, 4, **bf16)
    k2, v2 = torch.randn(2, 2, 1, 4, **bf16), torch.randn(2, 2, 1, 4, **bf16)
    keys, values = cache.update(k1, v1)
    assert keys.dtype == values.dtype == torch.bfloat16
    keys, values = cache.update(k2, v2)
    assert torch.equal(keys, torch.cat([k1, k2], 2))
    assert torch.equal(values, torch.cat([v1, v2], 2))
    cache.reorder(torch.tensor([1, 0]))
    assert cache.key.dtype == cache.value.dtype == torch.bfloat16
    assert torch.equal(cache.key[0, :, :4], keys[1])


def test_kv_cache_overflow_raises_and_keeps_its_state():
    cache = KVCache(1, 2, 4, 3)
    cache.update(torch.randn(1, 2, 3, 3), torch.randn(1, 2, 3, 3))
    before = cache.key.clone()
    message = "KV cache overflow: 3 cached + 2 new positions exceed max_len=4"
    with pytest.raises(ValueError, match=re.escape(message)):
        cache.update(torch.randn(1, 2, 2, 3), torch.randn(1, 2, 2, 3))
    assert cache.length == 3 and torch.equal(cache.key, before)
    cache.update(torch.randn(1, 2, 1, 3), torch.randn(1, 2, 1, 3))  # the last slot still fits
    assert cache.length == 4


@pytest.mark.parametrize(
    ("key_shape", "value_shape"),
    [
        ((3, 2, 1, 4), (3, 2, 1, 4)),  # batch
        ((2, 1, 1, 4), (2, 1, 1, 4)),  # kv heads
        ((2, 2, 1, 5), (2, 2, 1, 5)),  # head dim
        ((2, 2, 4), (2, 2, 1, 4)),  # key rank (would broadcast silently)
        ((2, 2, 1, 4), (1, 2, 1, 4)),  # value batch (would broadcast silently)
        ((2, 2, 2, 4), (2, 2, 1, 4)),  # value length (would broadcast silently)
        ((2, 2, 1, 4), (2, 2, 1, 3)),  # value dim
    ],
)
def test_kv_cache_rejects_wrong_shapes(key_shape, value_shape):
    cache = KVCache(2, 2, 5, 4)
    with pytest.raises(ValueError, match="must have shape"):
        cache.update(torch.randn(key_shape), torch.randn(value_shape))
    assert cache.length == 0


def test_kv_cache_reorder_selects_batch_rows():
    cache = KVCache(3, 2, 4, 2)
    keys, values = torch.randn(3, 2, 2, 2), torch.randn(3, 2, 2, 2)
    cache.update(keys, values)
    cache.reorder(torch.tensor([2, 0, 0]))
    assert cache.length == 2
    k, v = cache.key[:, :, :2], cache.value[:, :, :2]
    assert torch.equal(k, keys[[2, 0, 0]]) and torch.equal(v, values[[2, 0, 0]])
    # updates continue for the new rows
    new = torch.randn(3, 2, 1, 2)
    k, _ = cache.update(new, new)
    assert torch.equal(k, torch.cat([keys[[2, 0, 0]], new], 2))


def test_kv_cache_reset_starts_over():
    cache = KVCache(1, 1, 3, 2)
    cache.update(torch.randn(1, 1, 3, 2), torch.randn(1, 1, 3, 2))
    cache.reset()
    assert cache.length == 0
    new = torch.randn(1, 1, 2, 2)
    keys, _ = cache.update(new, new)
    assert torch.equal(keys, new)


def test_static_kv_cache_fills_once():
    cache = StaticKVCache()
    assert not cache.ready and cache.length == 0
    key, value = torch.randn(2, 2, 5, 3), torch.randn(2, 2, 5, 3)
    assert cache.update(key, value) == (key, value)
    assert cache.ready and cache.length == 5
    cache.reorder(torch.tensor([1, 1]))
    assert torch.equal(cache.key, key[[1, 1]]) and torch.equal(cache.value, value[[1, 1]])
    cache.reset()
    assert not cache.ready and cache.key is None and cache.value is None
    cache.reorder(torch.tensor([0]))  # a no-op while empty


# --------------------------------------------------------------------------- self-attention


def test_new_cache_is_sized_for_the_module():
    mha = MultiHeadAttention(16, 4, num_kv_heads=2, head_dim=3).double()
    cache = mha.new_cache(5, 9, like=torch.zeros(1, dtype=torch.float64))
    assert isinstance(cache, KVCache)
    assert cache.key.shape == (5, 2, 9, 3) and cache.value.shape == (5, 2, 9, 3)
    assert cache.key.dtype == torch.float64 and cache.length == 0


@pytest.mark.parametrize("backend", ["auto", "math", "chunked"])
@pytest.mark.parametrize("num_kv_heads", [4, 2, 1])
def test_step_by_step_decoding_equals_the_full_causal_forward(num_kv_heads, backend):
    mha = MultiHeadAttention(16, 4, num_kv_heads=num_kv_heads, backend=backend).eval()
    x = torch.randn(3, 7, 16)
    full, _ = mha(x, is_causal=True)
    cache = mha.new_cache(3, 10, like=x)
    steps = [mha(x[:, t : t + 1], cache=cache, is_causal=True)[0] for t in range(7)]
    assert cache.length == 7
    torch.testing.assert_close(torch.cat(steps, 1), full, **F32)


@pytest.mark.parametrize("num_kv_heads", [4, 2])
def test_a_chunk_after_a_prefix_uses_bottom_right_causal_alignment(num_kv_heads):
    mha = MultiHeadAttention(16, 4, num_kv_heads=num_kv_heads).eval()
    x = torch.randn(2, 9, 16)
    full, full_w = mha(x, is_causal=True, need_weights=True)
    cache = mha.new_cache(2, 9, like=x)
    out_prefix, _ = mha(x[:, :3], cache=cache, is_causal=True)
    out_chunk, w_chunk = mha(x[:, 3:7], cache=cache, is_causal=True, need_weights=True)
    out_rest, _ = mha(x[:, 7:], cache=cache, is_causal=True)
    torch.testing.assert_close(torch.cat([out_prefix, out_chunk, out_rest], 1), full, **F32)
    # the chunk's queries are positions 3..6 of 7 keys: each sees its own prefix only
    assert w_chunk.shape == (2, 4, 4, 7)
    torch.testing.assert_close(w_chunk, full_w[:, :, 3:7, :7], **F32)
    assert torch.all(w_chunk[:, :, 0, 4:] == 0)


def test_step_by_step_decoding_under_autocast_equals_the_full_forward():
    mha = MultiHeadAttention(16, 4, num_kv_heads=2).eval()
    x = torch.randn(2, 6, 16)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        full, _ = mha(x, is_causal=True)
        cache = mha.new_cache(2, 6, like=x)  # starts in fp32, as the parameters
        steps = [mha(x[:, t : t + 1], cache=cache, is_causal=True)[0] for t in range(6)]
    assert cache.key.dtype == torch.bfloat16 and full.dtype == torch.bfloat16
    torch.testing.assert_close(torch.cat(steps, 1), full, atol=2e-2, rtol=2e-2)


def test_cached_decoding_with_key_padding_mask():
    mha = MultiHeadAttention(8, 2).eval()
    x = torch.randn(2, 5, 8)
    real = torch.tensor([[True] * 5, [False, True, True, True, True]])  # left padding
    mask = real[:, None, None, :]
    full, _ = mha(x, mask=mask, is_causal=True)
    cache = mha.new_cache(2, 5, like=x)
    steps = [
        mha(x[:, t : t + 1], mask=mask[..., : t + 1], cache=cache, is_causal=True)[0]
        for t in range(5)
    ]
    torch.testing.assert_close(torch.cat(steps, 1), full, **F32)


def test_cache_overflow_inside_attention():
    mha = MultiHeadAttention(8, 2)
    cache = mha.new_cache(1, 4, like=torch.zeros(1))
    mha(torch.randn(1, 3, 8), cache=cache, is_causal=True)
    with pytest.raises(ValueError, match=re.escape("exceed max_len=4")):
        mha(torch.randn(1, 2, 8), cache=cache, is_causal=True)


def test_reorder_continues_decoding_of_the_selected_rows():
    mha = MultiHeadAttention(8, 2).eval()
    x = torch.randn(3, 5, 8)
    cache = mha.new_cache(3, 5, like=x)
    mha(x[:, :3], cache=cache, is_causal=True)
    rows = torch.tensor([2, 0, 0])
    cache.reorder(rows)
    out, _ = mha(x[rows, 3:], cache=cache, is_causal=True)
    full, _ = mha(x[rows], is_causal=True)
    torch.testing.assert_close(out, full[:, 3:], **F32)


def test_reset_cache_decodes_a_new_sequence_from_scratch():
    mha = MultiHeadAttention(8, 2).eval()
    first, second = torch.randn(2, 4, 8), torch.randn(2, 4, 8)
    cache = mha.new_cache(2, 4, like=first)
    mha(first, cache=cache, is_causal=True)
    cache.reset()
    out, _ = mha(second, cache=cache, is_causal=True)
    torch.testing.assert_close(out, mha(second, is_causal=True)[0], **F32)


# --------------------------------------------------------------------------- cross-attention


class CallCounter:
    def __init__(self, module):
        self.calls = 0
        module.register_forward_hook(self)

    def __call__(self, module, args, output):
        self.calls += 1


@pytest.mark.parametrize("num_kv_heads", [4, 1])
def test_static_cache_projects_the_memory_once(num_kv_heads):
    mha = MultiHeadAttention(16, 4, num_kv_heads=num_kv_heads).eval()
    k_calls, v_calls = CallCounter(mha.k_proj), CallCounter(mha.v_proj)
    memory = torch.randn(2, 6, 16)
    queries = torch.randn(2, 4, 16)
    mask = torch.tensor([[True] * 6, [True] * 3 + [False] * 3])[:, None, None, :]
    expected, expected_w = mha(queries, memory, memory, mask, need_weights=True)
    assert (k_calls.calls, v_calls.calls) == (1, 1)

    cache = StaticKVCache()
    outs = []
    for t in range(4):
        # after the first call the cache, not the (here deliberately wrong) memory, is used
        source = memory if t == 0 else torch.zeros_like(memory)
        out, weights = mha(
            queries[:, t : t + 1], source, source, mask, cache=cache, need_weights=True
        )
        torch.testing.assert_close(weights, expected_w[:, :, t : t + 1], **F32)
        outs.append(out)
    assert (k_calls.calls, v_calls.calls) == (2, 2)  # one uncached call + one fill
    assert cache.ready and cache.key.shape == (2, num_kv_heads, 6, 4)
    torch.testing.assert_close(torch.cat(outs, 1), expected, **F32)


def test_rotary_with_cross_attention_cache_is_rejected():
    def identity_rotary(q, k, *, offset, positions=None):
        return q, k

    mha = MultiHeadAttention(8, 2, rotary=identity_rotary)
    with pytest.raises(ValueError, match="rotary applies to self-attention"):
        mha(torch.randn(1, 2, 8), torch.randn(1, 3, 8), cache=StaticKVCache())
