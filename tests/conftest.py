"""Shared test fixtures: a fixed torch seed for every test and a backend runner."""

import os
from functools import partial
from unittest import mock

import pytest
import torch

from attnkit.functional import attention as attention_module
from attnkit.functional import chunked_attention, scaled_dot_product_attention


def pytest_configure(config):
    """One torch thread per xdist worker: `-n 2` on two cores, not 2 x 2 threads fighting."""
    if os.environ.get("PYTEST_XDIST_WORKER"):
        torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def _seed_torch():
    torch.manual_seed(0)


@pytest.fixture(scope="module")
def single_thread():
    """One intra-op thread for a module of tiny-tensor tests.

    On tiny tensors the thread pool only costs: with xdist workers or other processes on
    the same cores, its spin-waits make small ops (softmax, gradcheck loops) 10-30x slower.
    Use with ``pytestmark = pytest.mark.usefixtures("single_thread")``.
    """
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _attend(backend, query, key, value, attn_mask=None, *, block_q=3, block_k=4, **kwargs):
    """``scaled_dot_product_attention`` with ``backend``; returns ``(output, weights)``.

    ``"chunked_small"`` is the chunked backend with tiny ``block_q x block_k`` tiles (so
    that several tiles and ragged last tiles are exercised), temporarily registered so
    the public entry point still validates and broadcasts the inputs.
    """
    if backend != "chunked_small":
        return scaled_dot_product_attention(query, key, value, attn_mask, backend=backend, **kwargs)
    small = attention_module.AttentionBackend(
        "chunked_small",
        partial(chunked_attention, block_q=block_q, block_k=block_k),
        returns_weights=False,
        description="chunked attention with tiny tiles (tests only)",
    )
    with mock.patch.dict(attention_module._BACKENDS, {"chunked_small": small}):
        return scaled_dot_product_attention(
            query, key, value, attn_mask, backend="chunked_small", **kwargs
        )


@pytest.fixture(scope="session")
def attend():
    """``attend(backend, q, k, v, mask=None, *, block_q=3, block_k=4, **kw) -> (out, w)``.

    Backends: ``"fused"``, ``"math"``, ``"chunked"`` (default 512-wide tiles, i.e. one
    tile for test sizes), ``"chunked_small"`` (tiny tiles) and ``"auto"``.
    """
    return _attend
