"""Shared test models for the decoding tests: a random Transformer that ends rows at eos,
and an uncached reference decoder that reruns the full forward pass for every token."""

import torch
from torch import Tensor, nn

from attnkit.models import Transformer

PAD, BOS, EOS = 0, 1, 2


class BiasedTransformer(Transformer):
    """A Transformer with a learned output bias, so that a random model ends rows at eos."""

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self.logit_bias = nn.Parameter(torch.zeros(self.config.tgt_vocab_size))

    def project(self, hidden: Tensor) -> Tensor:
        return super().project(hidden) + self.logit_bias


def random_model(
    vocab: int = 8, seed: int = 0, *, eos_bias: float = 1.0, dtype: torch.dtype = torch.float64
) -> BiasedTransformer:
    torch.manual_seed(seed)
    model = BiasedTransformer(
        vocab_size=vocab,
        d_model=16,
        num_heads=2,
        num_layers=2,
        d_ff=32,
        dropout=0.0,
        max_len=64,
        tie_output=False,
        norm_first=True,
    )
    with torch.no_grad():
        model.output_projection.weight.mul_(2.0)
        model.logit_bias.normal_()
        model.logit_bias[EOS] = eos_bias
    return model.to(dtype).eval()


class FullForward:
    """Uncached reference DecodingModel: every step reruns ``model(src, tokens)`` in full."""

    def __init__(self, model: Transformer, src: Tensor) -> None:
        self.model, self.src = model, src

    @property
    def batch_size(self) -> int:
        return self.src.size(0)

    @property
    def device(self) -> torch.device:
        return self.src.device

    def start(self, num_beams, max_new_tokens, *, bos_id):
        rows = self.batch_size * num_beams
        state = {
            "src": self.src.repeat_interleave(num_beams, dim=0),
            "tokens": torch.full((rows, 1), bos_id),
        }
        return state, self._logits(state)

    def _logits(self, state) -> Tensor:
        tokens = state["tokens"]
        all_real = torch.ones(1, 1, 1, tokens.size(1), dtype=torch.bool)
        return self.model(state["src"], tokens, tgt_mask=all_real)[:, -1]

    def step(self, state, tokens):
        state["tokens"] = torch.cat([state["tokens"], tokens], dim=1)
        return self._logits(state)

    def reorder(self, state, indices):
        state["src"] = state["src"][indices]
        state["tokens"] = state["tokens"][indices]
