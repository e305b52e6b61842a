"""Helpers for the attention explorer tests: captures of small models, the page's data."""

from __future__ import annotations

import json
import re
from pathlib import Path

import torch

from attnkit.analysis.capture import AttentionCapture, capture_attention
from attnkit.models import Transformer, TransformerConfig

SOURCE = ["Ein", "Hund", "läuft", "durch", "Schnee", "."]
TARGET = ["<bos>", "A", "dog", "runs", "through"]

_DATA = re.compile(r'<script type="application/json" id="attention-data">(.*?)</script>', re.DOTALL)


def read_explorer_data(path: Path) -> dict:
    """The JSON data embedded in an explorer page."""
    match = _DATA.search(path.read_text(encoding="utf-8"))
    assert match is not None, f"{path}: no attention-data script"
    return json.loads(match.group(1))


def seq2seq_capture(batch: int = 1) -> AttentionCapture:
    """A random Transformer (2 encoder, 3 decoder layers, 2 heads) on SOURCE -> TARGET."""
    config = TransformerConfig(
        src_vocab_size=40, tgt_vocab_size=40, d_model=16, num_heads=2,
        num_encoder_layers=2, num_decoder_layers=3, d_ff=32, dropout=0.0,
    )  # fmt: skip
    model = Transformer.from_config(config).eval()
    src = torch.randint(3, 40, (batch, len(SOURCE)))
    tgt = torch.randint(3, 40, (batch, len(TARGET)))
    with torch.no_grad(), capture_attention(model) as capture:
        model(src, tgt)
    return capture
