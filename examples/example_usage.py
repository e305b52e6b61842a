"""A compact tour of attnkit's public API: every family and variant, one forward pass each.

Run it with ``python examples/example_usage.py`` (a few seconds on a CPU, no data needed).
Each line prints what was built and the shapes that came out. Conventions: batch first,
``(B, T, D)`` activations and ``(B, H, T, Dh)`` per head; boolean masks with ``True`` =
may attend / real token.
"""

from __future__ import annotations

import torch

from attnkit.functional import (
    available_backends,
    combine_masks,
    create_causal_mask,
    create_padding_mask,
    create_sliding_window_mask,
    from_torch_mha_masks,
    mask_to_additive,
    scaled_dot_product_attention,
)
from attnkit.generation import beam_search, generate, greedy_decode, sample
from attnkit.models import (
    GAT,
    GPT,
    T5,
    AttentionQNetwork,
    AttentionQNetworkConfig,
    BertConfig,
    BertForMaskedLM,
    BertForPreTraining,
    BertForSequenceClassification,
    BertForTokenClassification,
    BertModel,
    BiLSTMAttentionClassifier,
    BiLSTMAttentionTagger,
    BiLSTMConfig,
    CaptioningConfig,
    CrossAttentionFusion,
    FusionConfig,
    GATConfig,
    GPTConfig,
    RNNSeq2Seq,
    RNNSeq2SeqConfig,
    ShowAttendTell,
    T5Config,
    Transformer,
    TransformerConfig,
    ViT,
    ViTConfig,
    build_gat,
)
from attnkit.nn import (
    ALiBi,
    AttentionLayer,
    BahdanauAttention,
    BlockSparseAttention,
    DenseGraphAttentionLayer,
    FeedForward,
    GraphAttentionLayer,
    KVCache,
    LearnedPositionalEncoding,
    LinearAttention,
    LSHAttention,
    LuongAttention,
    MultiHeadAttention,
    PatchEmbedding,
    PerformerAttention,
    PositionalEncoding,
    RelativePositionAttention,
    RMSNorm,
    RotaryEmbedding,
    ScaledDotProductAttention,
    SlidingWindowAttention,
    T5RelativePositionBias,
    TransformerDecoderLayer,
    TransformerEncoderLayer,
)

torch.manual_seed(0)
B, T, S, D, H = 2, 12, 9, 32, 4  # batch, target length, source length, width, heads


def shapes(value) -> str:
    """Shapes of a tensor, or of the tensors in a tuple / list / output dataclass."""
    if isinstance(value, torch.Tensor):
        return str(tuple(value.shape))
    if isinstance(value, (tuple, list)):
        return "(" + ", ".join(shapes(v) for v in value) + ")"
    if hasattr(value, "logits"):
        loss = "" if getattr(value, "loss", None) is None else f", loss {value.loss.item():.2f}"
        return f"logits {tuple(value.logits.shape)}{loss}"
    if hasattr(value, "last_hidden_state"):
        return f"last_hidden_state {tuple(value.last_hidden_state.shape)}"
    return type(value).__name__


def show(name: str, value) -> None:
    print(f"  {name:52s} {shapes(value)}")


def section(title: str) -> None:
    print(f"\n{title}")


x = torch.randn(B, T, D)
memory = torch.randn(B, S, D)
tokens = torch.randint(4, 100, (B, T))
tokens[1, -3:] = 0  # the second row ends in padding

# --------------------------------------------------------------------- functional
section("attnkit.functional: masks and scaled_dot_product_attention")
padding = create_padding_mask(tokens, pad_id=0)
causal = create_causal_mask(T)
show("create_padding_mask(tokens, 0)", padding)
show("create_causal_mask(T)", causal)
show("create_sliding_window_mask(T, window=3)", create_sliding_window_mask(T, window=3))
show("combine_masks(padding, causal)", combine_masks(padding, causal))
show("mask_to_additive(causal)", mask_to_additive(causal))
torch_style = torch.triu(torch.ones(T, T, dtype=torch.bool), diagonal=1)  # True = blocked
show("from_torch_mha_masks(attn_mask=...)", from_torch_mha_masks(attn_mask=torch_style))
q = k = v = torch.randn(B, H, T, D // H)
for backend in available_backends():
    if backend == "flex":
        continue  # FlexAttention compiles its kernel on first use: slow to start on a CPU
    out, weights = scaled_dot_product_attention(q, k, v, is_causal=True, backend=backend)
    show(f"scaled_dot_product_attention(backend={backend!r})", out)
show(
    "... need_weights=True -> (output, weights)",
    scaled_dot_product_attention(q, k, v, need_weights=True),
)

# --------------------------------------------------------------------- nn: attention
section("attnkit.nn: attention modules")
mha = MultiHeadAttention(D, H)
show("MultiHeadAttention self (need_weights)", mha(x, need_weights=True))
show("MultiHeadAttention cross (query x, key memory)", mha(x, memory, memory)[0])
show(
    "MultiHeadAttention GQA num_kv_heads=2, causal",
    MultiHeadAttention(D, H, num_kv_heads=2)(x, is_causal=True)[0],
)
show("MultiHeadAttention MQA num_kv_heads=1", MultiHeadAttention(D, 4, num_kv_heads=1)(x)[0])
show("ScaledDotProductAttention (math, weights)", ScaledDotProductAttention()(q, k, v))
show("RelativePositionAttention (Shaw et al.)", RelativePositionAttention(D, H)(x)[0])
show("SlidingWindowAttention(window=4)", SlidingWindowAttention(D, H, window=4)(x)[0])
for pattern in ("sliding", "strided", "fixed", "longformer", "bigbird"):
    module = BlockSparseAttention(D, H, pattern=pattern, block_size=4)
    show(
        f"BlockSparseAttention(pattern={pattern!r})",
        module(x, is_causal=pattern in ("strided", "fixed"))[0],
    )
show("LinearAttention (elu + 1 kernel)", LinearAttention(D, H, chunk_size=4)(x)[0])
show("PerformerAttention(num_features=16)", PerformerAttention(D, H, num_features=16)(x)[0])
show(
    "LSHAttention(num_buckets=4, chunk_size=4)",
    LSHAttention(D, H, num_buckets=4, chunk_size=4)(x)[0],
)
source_mask = tokens[:, :S] != 0
show(
    "BahdanauAttention (one decoder step)",
    BahdanauAttention(16, D)(torch.randn(B, 16), memory, mask=source_mask),
)
for score in ("dot", "general", "concat"):
    luong = LuongAttention(D, D, score=score)
    show(f"LuongAttention(score={score!r}) (all steps)", luong(x, memory, mask=source_mask))
show("AttentionLayer (single head, teaching)", AttentionLayer(D, 16)(x))
edges = torch.tensor([[0, 1, 2, 3, 4], [1, 2, 3, 4, 0]])  # source -> target
nodes = torch.randn(5, D)
show(
    "GraphAttentionLayer(heads=4) on an edge list", GraphAttentionLayer(D, 8, heads=4)(nodes, edges)
)
adjacency = torch.eye(5, dtype=torch.bool).roll(1, dims=1)
show("DenseGraphAttentionLayer on an adjacency", DenseGraphAttentionLayer(D, 8)(nodes, adjacency))

# --------------------------------------------------------------------- nn: positions, layers
section("attnkit.nn: positions, layers, KV cache")
show("PositionalEncoding (sinusoidal)", PositionalEncoding(D)(x))
show("LearnedPositionalEncoding", LearnedPositionalEncoding(D, max_len=64)(x))
rotary = RotaryEmbedding(D // H, scaling="ntk", factor=2.0)
show("RotaryEmbedding(scaling='ntk') (q, k)", rotary(q, k))
show("ALiBi(num_heads) bias", ALiBi(H)(T, T))
show("T5RelativePositionBias bias", T5RelativePositionBias(H)(T, T))
show("MultiHeadAttention(rotary=RotaryEmbedding)", MultiHeadAttention(D, H, rotary=rotary)(x)[0])
show("MultiHeadAttention(score_bias=ALiBi)", MultiHeadAttention(D, H, score_bias=ALiBi(H))(x)[0])
for activation in ("relu", "gelu", "swiglu", "geglu"):
    show(f"FeedForward(activation={activation!r})", FeedForward(D, 64, activation=activation)(x))
show("RMSNorm", RMSNorm(D)(x))
show("PatchEmbedding(4, 1, D) on 28x28 images", PatchEmbedding(4, 1, D)(torch.randn(B, 1, 28, 28)))
for norm_first in (False, True):
    encoder_layer = TransformerEncoderLayer(D, H, 64, norm_first=norm_first)
    show(f"TransformerEncoderLayer(norm_first={norm_first})", encoder_layer(x, padding))
show(
    "TransformerDecoderLayer (causal, cross-attention)",
    TransformerDecoderLayer(D, H, 64)(x, memory, is_causal=True),
)
cache = KVCache(B, H, max_len=T, head_dim=D // H)
with torch.no_grad():
    step_by_step = torch.cat(
        [mha(x[:, t : t + 1], cache=cache, is_causal=True)[0] for t in range(T)], dim=1
    )
    print(
        f"  {'KVCache: T single-token steps == one causal call':52s} "
        f"{torch.allclose(step_by_step, mha(x, is_causal=True)[0], atol=1e-5)}"
    )

# --------------------------------------------------------------------- models
section("attnkit.models: every family")
src, tgt = torch.randint(4, 100, (B, S)), torch.randint(4, 100, (B, T))
transformer = Transformer(vocab_size=100, d_model=D, num_heads=H, num_layers=2, d_ff=64).eval()
show("Transformer (encoder-decoder, logits)", transformer(src, tgt))
show(
    "Transformer.from_config(TransformerConfig(positional='rotary'))",
    Transformer.from_config(
        TransformerConfig(
            100,
            100,
            d_model=D,
            num_heads=H,
            num_encoder_layers=1,
            num_decoder_layers=1,
            positional="rotary",
        )
    )(src, tgt),
)
gpt = GPT(GPTConfig(vocab_size=100, max_len=64, d_model=D, num_heads=H, num_layers=2)).eval()
show("GPT (GPT-2 layout)", gpt(tokens, labels=tokens))
llama = GPT(
    GPTConfig(
        vocab_size=100,
        d_model=D,
        num_heads=H,
        num_layers=2,
        positional="rotary",
        norm="rmsnorm",
        activation="swiglu",
        num_kv_heads=2,
        bias=False,
    )
)
show("GPT (Llama-style: rotary, RMSNorm, SwiGLU, GQA)", llama(tokens))
for kind in ("sliding_window", "linear", "performer"):
    config = GPTConfig(
        vocab_size=100,
        d_model=D,
        num_heads=H,
        num_layers=1,
        attention=kind,
        attention_options={"window": 4} if kind == "sliding_window" else {},
    )
    show(f"GPT(attention={kind!r})", GPT(config)(tokens))
bert_config = BertConfig(vocab_size=100, d_model=D, num_heads=H, num_layers=2, d_ff=64)
attention_mask = tokens != 0
show("BertModel", BertModel(bert_config)(tokens, attention_mask))
show("BertForMaskedLM", BertForMaskedLM(bert_config)(tokens, attention_mask, labels=tokens))
show("BertForPreTraining (MLM + NSP)", BertForPreTraining(bert_config)(tokens, attention_mask))
show(
    "BertForSequenceClassification",
    BertForSequenceClassification(bert_config)(tokens, attention_mask, labels=torch.tensor([0, 1])),
)
show("BertForTokenClassification", BertForTokenClassification(bert_config)(tokens, attention_mask))
t5 = T5(T5Config(vocab_size=100, d_model=D, d_kv=8, d_ff=64, num_heads=H, num_layers=2))
show("T5 (relative bias, span corruption style labels)", t5(src, labels=tgt))
vit = ViT(
    ViTConfig(
        image_size=28,
        patch_size=4,
        num_channels=1,
        d_model=D,
        num_heads=H,
        num_layers=2,
        d_ff=64,
        num_labels=10,
    )
)
show("ViT on 28x28 images", vit(torch.randn(B, 1, 28, 28)))
show("ViT on 40x40 images (positions interpolated)", vit(torch.randn(B, 1, 40, 40)))
for cell, attention in (("gru", "bahdanau"), ("lstm", "luong")):
    rnn = RNNSeq2Seq(
        RNNSeq2SeqConfig(
            100,
            100,
            cell=cell,
            attention=attention,
            embedding_dim=16,
            encoder_hidden_size=16,
            decoder_hidden_size=32,
        )
    )
    show(
        f"RNNSeq2Seq(cell={cell!r}, attention={attention!r}) + weights",
        rnn(src, tgt, return_attention=True),
    )
captioner = ShowAttendTell(CaptioningConfig(vocab_size=50, image_size=56, hidden_dim=32))
show("ShowAttendTell (captioning)", captioner(torch.randn(B, 1, 56, 56), tgt % 50, labels=tgt % 50))
bilstm = BiLSTMConfig(vocab_size=100, embed_dim=16, hidden_size=16, num_labels=3)
show("BiLSTMAttentionClassifier", BiLSTMAttentionClassifier(bilstm)(tokens, attention_mask))
show("BiLSTMAttentionTagger", BiLSTMAttentionTagger(bilstm)(tokens, attention_mask))
gat: GAT = build_gat(GATConfig(in_features=D, num_classes=3, hidden_features=8, heads=4))
show("GAT (build_gat) on 5 nodes", gat(nodes, edges))
show(
    "AttentionQNetwork (DQN, CartPole-sized)",
    AttentionQNetwork(AttentionQNetworkConfig(obs_dim=4, num_actions=2))(torch.randn(B, 4)),
)
fusion = CrossAttentionFusion(FusionConfig(vocab_size=100, d_model=D, num_heads=H, d_ff=64))
show(
    "CrossAttentionFusion (question -> image patches)",
    fusion(torch.randn(B, 1, 28, 28), tokens, attention_mask),
)

# --------------------------------------------------------------------- generation
section("attnkit.generation: decoding (untrained models, so the tokens are random)")
with torch.no_grad():
    show(
        "greedy_decode(Transformer, src)",
        greedy_decode(transformer, src, max_new_tokens=6, bos_id=1, eos_id=2),
    )
    beams = beam_search(transformer, src, max_new_tokens=6, bos_id=1, eos_id=2, beam_size=3)
    show("beam_search(Transformer, beam_size=3).sequences", beams.sequences)
    show(
        "sample(GPT, prompt, top_k=10, top_p=0.9)",
        sample(
            gpt,
            tokens[:, :4],
            max_new_tokens=6,
            top_k=10,
            top_p=0.9,
            generator=torch.Generator().manual_seed(0),
        ),
    )
    show(
        "generate(GPT, prompt, 'greedy')",
        generate(gpt, tokens[:, :4], "greedy", max_new_tokens=6, eos_id=None),
    )
    show(
        "generate(T5, src, 'greedy')",
        generate(t5, src, "greedy", max_new_tokens=6, bos_id=0, eos_id=1),
    )

print("\nAll families built and run. See docs/ (mkdocs serve) and examples/tutorial.py.")
