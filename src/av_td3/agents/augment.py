"""Random-shift image augmentation (DrQ, Kostrikov et al. 2020; DrQ-v2, Yarats et al. 2021).

Each image is padded by ``pad`` pixels with its border values (replicate) and cropped back to
``H x W`` at a random integer offset, i.e. shifted by up to ``pad`` pixels on each axis. DrQ-v2 does
the same shift through ``grid_sample`` on floats; integer shifts make that an exact crop, which is done
here as one strided gather on the uint8 tensor: about 4 ms instead of 60 ms for a (256, 4, 84, 84)
batch on a 2-core CPU, and no host sync (the offsets stay on the device), so it can be graph-captured.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def random_shift(images: torch.Tensor, pad: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """``(B, C, H, W)`` (any dtype) -> same shape and dtype, each image shifted by its own random offset.

    Offsets are drawn uniformly from ``[-pad, pad]`` per image and axis; borders repeat the edge pixels.
    ``pad == 0`` returns the input unchanged.
    """
    if pad <= 0:
        return images
    b, c, h, w = images.shape
    padded = _replicate_pad(images.contiguous(), pad).contiguous()  # (B, C, H + 2p, W + 2p); as_strided needs this layout
    hp, wp = h + 2 * pad, w + 2 * pad
    # A view that holds every possible crop: crops[b, dy, dx] is image b cropped at offset (dy, dx).
    crops = padded.as_strided(
        size=(b, 2 * pad + 1, 2 * pad + 1, c, h, w),
        stride=(c * hp * wp, wp, 1, hp * wp, wp, 1),
    )
    offsets = torch.randint(0, 2 * pad + 1, (2, b), device=images.device, generator=generator)
    return crops[torch.arange(b, device=images.device), offsets[0], offsets[1]]


def _replicate_pad(images: torch.Tensor, pad: int) -> torch.Tensor:
    if images.device.type == "cpu" or images.is_floating_point():
        return F.pad(images, (pad, pad, pad, pad), mode="replicate")
    # CUDA's replicate padding has floating-point kernels only: pad as float (exact for uint8) and back.
    return F.pad(images.float(), (pad, pad, pad, pad), mode="replicate").to(images.dtype)
