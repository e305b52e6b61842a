"""Image patches as tokens (Dosovitskiy et al. 2021): a strided convolution per patch."""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor, nn

__all__ = ["PatchEmbedding"]


class PatchEmbedding(nn.Module):
    """Cut ``(B, C, H, W)`` images into ``P x P`` patches and project each to ``D``.

    Returns ``(B, (H / P) * (W / P), D)`` tokens in row-major patch order; a
    convolution with kernel and stride ``P`` is the same as flattening each
    patch and applying one shared linear layer.

    ``stem_channels`` puts a small CNN before the patches, the ViT paper's
    *hybrid* input (its section 3.1: patches of a CNN feature map): one 3x3
    convolution (stride 1, so the grid is unchanged) + BatchNorm + ReLU per
    entry, and the patches are cut from its last feature map. Empty: plain ViT.

    Example:
        >>> import torch
        >>> from attnkit.nn import PatchEmbedding
        >>> embed = PatchEmbedding(patch_size=4, in_channels=3, d_model=32)
        >>> tokens = embed(torch.randn(2, 3, 16, 16))  # (B, C, H, W) images
        >>> tuple(tokens.shape)  # (16 / 4) * (16 / 4) = 16 patches
        (2, 16, 32)
        >>> hybrid = PatchEmbedding(4, 3, 32, stem_channels=(16,))  # 3x3 conv, then patches
        >>> tuple(hybrid(torch.randn(2, 3, 16, 16)).shape)
        (2, 16, 32)
    """

    def __init__(
        self, patch_size: int, in_channels: int, d_model: int, stem_channels: Sequence[int] = ()
    ) -> None:
        super().__init__()
        self.patch_size = patch_size
        self.in_channels = in_channels
        self.stem = nn.Sequential()
        channels = in_channels
        for width in stem_channels:
            self.stem.extend(
                [
                    nn.Conv2d(channels, width, kernel_size=3, padding=1, bias=False),
                    nn.BatchNorm2d(width),
                    nn.ReLU(),
                ]
            )
            channels = width
        self.projection = nn.Conv2d(channels, d_model, kernel_size=patch_size, stride=patch_size)

    def grid(self, height: int, width: int) -> tuple[int, int]:
        """Patches per column and row of an image of ``height x width`` pixels."""
        return height // self.patch_size, width // self.patch_size

    def forward(self, images: Tensor) -> Tensor:
        if images.dim() != 4 or images.size(1) != self.in_channels:
            raise ValueError(
                f"images must have shape (B, {self.in_channels}, H, W); got {tuple(images.shape)}"
            )
        height, width = images.shape[-2:]
        if height % self.patch_size or width % self.patch_size:
            raise ValueError(
                f"image size {height}x{width} must be a multiple of the patch size "
                f"{self.patch_size}"
            )
        return self.projection(self.stem(images)).flatten(2).transpose(1, 2)
