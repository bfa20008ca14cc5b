"""Networks of the learning core: the NatureCNN encoder, the dict-observation encoder, actor, twin critic.

Shapes: ``B`` batch, ``k`` stacked frames, ``H x W`` image, ``V`` vector length, ``F`` CNN feature size,
``S = F + V`` the flat state the MLPs read (535 by default), ``A`` action size.
"""

from __future__ import annotations

from typing import Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import nn


class NatureCNN(nn.Module):
    """The Nature-DQN encoder (Mnih et al. 2015): ``(B, C, H, W)`` images -> ``(B, feature_dim)``.

    ``C -> 32 (8x8 s4) -> 64 (4x4 s2) -> 64 (3x3 s1) -> flatten -> Linear -> feature_dim``, ReLU after
    every layer (the seed's and SB3's NatureCNN; ``TD3Agent``'s docstring says why not LayerNorm).
    The flatten size is computed from ``image_size``, so a CNN can be built for any image of at least
    36 x 36; ``forward`` then takes exactly ``(B, input_channels, *image_size)``.

    Input is ``uint8`` in [0, 255] (scaled to [0, 1] inside, so buffers and envs keep bytes) or floats
    that must already be in [0, 1]: float input is used as given (not divided by 255, and not checked,
    since checking its range would cost a host sync per forward on GPU), so raw 0..255 floats silently
    give 255x too large activations; pass such pixels as ``uint8``. Convolutions run in
    ``channels_last`` layout: oneDNN's fastest on CPU (the first convolution's forward + backward at
    batch 256: 27 ms instead of 47 ms in NCHW on 2 cores) and the tensor-core layout on GPU.
    """

    def __init__(self, input_channels: int = 4, feature_dim: int = 512, image_size: Sequence[int] = (84, 84)):
        super().__init__()
        height, width = int(image_size[0]), int(image_size[1])
        if height < 36 or width < 36:
            raise ValueError(f"NatureCNN needs images of at least 36x36 pixels, got image_size={(height, width)}")
        if int(input_channels) < 1 or int(feature_dim) < 1:
            raise ValueError(f"NatureCNN needs input_channels >= 1 (frames x colour channels, e.g. 4) and "
                             f"feature_dim >= 1, got input_channels={input_channels}, feature_dim={feature_dim}")
        self.input_channels, self.feature_dim, self.image_size = int(input_channels), int(feature_dim), (height, width)
        self.conv = nn.Sequential(
            nn.Conv2d(input_channels, 32, kernel_size=8, stride=4), nn.ReLU(inplace=True),
            nn.Conv2d(32, 64, kernel_size=4, stride=2), nn.ReLU(inplace=True),
            nn.Conv2d(64, 64, kernel_size=3, stride=1), nn.ReLU(inplace=True),
            nn.Flatten(),
        )
        with torch.no_grad():
            n_flat = self.conv(torch.zeros(1, input_channels, height, width)).shape[1]
        self.linear = nn.Sequential(nn.Linear(n_flat, feature_dim), nn.ReLU())
        self.to(memory_format=torch.channels_last)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """``(B, C, H, W)`` uint8 in [0, 255] or float in [0, 1] -> ``(B, feature_dim)`` float32.

        Raises:
            ValueError: ``images`` is not ``(B, input_channels, *image_size)``, the shape this CNN was
                built for (its linear layer's input size depends on the image size).
        """
        expected = (self.input_channels, *self.image_size)
        if images.dim() != 4 or tuple(images.shape[-3:]) != expected:  # shape only: no host sync
            got = tuple(images.shape)
            hint = ""
            if images.dim() == 4:
                hint = (f"; for {got[2]}x{got[3]} images with {got[1]} channels build it with NatureCNN("
                        f"input_channels={got[1]}, image_size=({got[2]}, {got[3]})), or resize the images")
            raise ValueError(
                f"NatureCNN expects images shaped (B, {self.input_channels}, {self.image_size[0]}, "
                f"{self.image_size[1]}) (built with input_channels={self.input_channels}, image_size="
                f"{self.image_size}), got {got}{hint}"
            )
        # 1/255 is folded into the first convolution's weights (no extra pass over the pixels). Under
        # autocast the pixels go straight to its dtype (one pass instead of uint8 -> float32 -> bfloat16).
        device = images.device.type
        dtype = torch.get_autocast_dtype(device) if torch.is_autocast_enabled(device) else torch.float32
        x = _channels_last(images).to(dtype)
        conv1 = self.conv[0]
        scale = 1.0 / 255.0 if images.dtype == torch.uint8 else 1.0
        x = F.relu_(F.conv2d(x, conv1.weight * scale, conv1.bias, conv1.stride))
        return self.linear(self.conv[2:](x))

    def extra_repr(self) -> str:
        return f"input_channels={self.input_channels}, feature_dim={self.feature_dim}, image_size={self.image_size}"


def _channels_last(images: torch.Tensor) -> torch.Tensor:
    """``(B, C, H, W)`` in channels_last memory layout, converted while still uint8 (4x fewer bytes).

    Stacking the C planes along a new last axis is about 2x faster on CPU than
    ``.contiguous(memory_format=torch.channels_last)`` for a handful of channels.
    """
    if images.is_contiguous(memory_format=torch.channels_last):
        return images
    return torch.stack(images.unbind(1), dim=-1).permute(0, 3, 1, 2)


def mlp(in_dim: int, hidden: Sequence[int], out_dim: int, output_activation: nn.Module | None = None) -> nn.Sequential:
    """``Linear -> ReLU`` for each hidden width, then ``Linear(out_dim)`` (+ ``output_activation``)."""
    layers: list[nn.Module] = []
    for width in hidden:
        layers += [nn.Linear(in_dim, width), nn.ReLU()]
        in_dim = width
    layers.append(nn.Linear(in_dim, out_dim))
    if output_activation is not None:
        layers.append(output_activation)
    return nn.Sequential(*layers)


class DictEncoder(nn.Module):
    """Dict observation -> flat float32 state: ``cat(cnn(obs[image_key]), obs[k] for the other keys)``.

    ``{"image": (B, k, H, W) uint8, "vector": (B, V) float32}`` -> ``(B, F + V)``; the CNN features come
    first, as in the seed's 535-d state (512 features + 23 vector values). With ``compute_dtype``
    (e.g. ``torch.bfloat16``) the CNN runs under autocast; its parameters, and everything after it,
    stay float32.
    """

    def __init__(self, cnn: nn.Module, vector_keys: Sequence[str] = ("vector",), image_key: str = "image",
                 compute_dtype: torch.dtype | None = None):
        super().__init__()
        self.cnn, self.vector_keys, self.image_key = cnn, tuple(vector_keys), image_key
        self.compute_dtype = compute_dtype

    def forward(self, obs: Mapping[str, torch.Tensor]) -> torch.Tensor:
        image = obs[self.image_key]
        with torch.autocast(image.device.type, self.compute_dtype or torch.float32, enabled=self.compute_dtype is not None):
            features = self.cnn(image).float()
        return torch.cat([features] + [obs[k].flatten(1).float() for k in self.vector_keys], dim=1)


class Actor(nn.Module):
    """Deterministic policy: ``(B, S)`` state -> ``(B, A)`` action in ``[-max_action, max_action]``."""

    def __init__(self, state_dim: int, action_dim: int, hidden: Sequence[int], max_action: float):
        super().__init__()
        self.net = mlp(state_dim, hidden, action_dim, nn.Tanh())
        self.max_action = float(max_action)

    def forward(self, state: torch.Tensor) -> torch.Tensor:
        return self.max_action * self.net(state)


class Critic(nn.Module):
    """Twin Q (clipped double-Q, Fujimoto et al. 2018): ``(B, S), (B, A)`` -> two ``(B, 1)`` values."""

    def __init__(self, state_dim: int, action_dim: int, hidden: Sequence[int]):
        super().__init__()
        self.q1_net = mlp(state_dim + action_dim, hidden, 1)
        self.q2_net = mlp(state_dim + action_dim, hidden, 1)

    def forward(self, state: torch.Tensor, action: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        sa = torch.cat([state, action], dim=1)
        return self.q1_net(sa), self.q2_net(sa)

    def q1(self, state: torch.Tensor, action: torch.Tensor) -> torch.Tensor:
        """Only the first head: the actor maximises Q1 (as in TD3)."""
        return self.q1_net(torch.cat([state, action], dim=1))


def cnn_compute_dtype(precision: str, device: torch.device | str) -> torch.dtype | None:
    """``networks.cnn.precision`` -> the autocast dtype for the CNN (``None``: plain float32).

    ``auto`` picks bfloat16 only where it is native (CPU flags ``avx512_bf16`` / ``amx_bf16``; a GPU with
    bf16): elsewhere oneDNN would emulate it, slower than float32.
    """
    if precision == "float32":
        return None
    if precision == "bfloat16":
        return torch.bfloat16
    device = torch.device(device)
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else None
    return torch.bfloat16 if device.type == "cpu" and _cpu_has_native_bf16() else None


def _cpu_has_native_bf16() -> bool:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    flags = set(line.split(":", 1)[1].split())
                    return bool(flags & {"avx512_bf16", "amx_bf16"})
    except OSError:
        pass
    return False


def set_requires_grad(module: nn.Module, flag: bool) -> None:
    for p in module.parameters():
        p.requires_grad_(flag)


__all__ = ["NatureCNN", "DictEncoder", "Actor", "Critic", "mlp", "cnn_compute_dtype", "set_requires_grad"]
