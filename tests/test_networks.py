"""NatureCNN, actor/critic and the random-shift augmentation."""

import pytest
import torch
import torch.nn.functional as F

from av_td3.agents.augment import random_shift
from av_td3.agents.networks import Actor, Critic, DictEncoder, NatureCNN, cnn_compute_dtype, mlp


@pytest.mark.parametrize("size", [(84, 84), (36, 36), (64, 96)])
def test_nature_cnn_shapes_for_any_image_size(size):
    cnn = NatureCNN(input_channels=4, feature_dim=32, image_size=size)
    out = cnn(torch.randint(0, 256, (3, 4, *size), dtype=torch.uint8))
    assert out.shape == (3, 32) and out.dtype == torch.float32
    assert (out >= 0).all()  # ReLU output


def test_nature_cnn_architecture_is_the_nature_dqn_stack():
    cnn = NatureCNN()
    convs = [m for m in cnn.conv if isinstance(m, torch.nn.Conv2d)]
    assert [(c.in_channels, c.out_channels, c.kernel_size, c.stride) for c in convs] == [
        (4, 32, (8, 8), (4, 4)), (32, 64, (4, 4), (2, 2)), (64, 64, (3, 3), (1, 1))]
    assert cnn.linear[0].in_features == 64 * 7 * 7 and cnn.linear[0].out_features == 512


def test_uint8_input_is_scaled_like_float_input():
    torch.manual_seed(0)
    cnn = NatureCNN(4, 16, image_size=(36, 36))
    x = torch.randint(0, 256, (2, 4, 36, 36), dtype=torch.uint8)
    torch.testing.assert_close(cnn(x), cnn(x.float() / 255.0))


def test_nature_cnn_rejects_wrong_channels_and_tiny_images():
    cnn = NatureCNN(4, 16, image_size=(36, 36))
    with pytest.raises(ValueError, match=r"\(B, 4, 36, 36\).*got \(1, 3, 36, 36\).*input_channels=3"):
        cnn(torch.zeros(1, 3, 36, 36))
    with pytest.raises(ValueError, match=r"expects images shaped \(B, 4, 36, 36\).*got \(4, 36, 36\)"):
        cnn(torch.zeros(4, 36, 36))  # no batch dimension
    with pytest.raises(ValueError, match="at least 36x36"):
        NatureCNN(4, 16, image_size=(20, 20))


@pytest.mark.parametrize("size", [(84, 84), (40, 36), (37, 37)])
def test_nature_cnn_rejects_another_image_size_than_it_was_built_for(size):
    """A clear error, not the linear layer's raw matmul error (84x84); (40, 36) and (37, 37) give the same
    flatten size, so they used to run silently on features the CNN was not built for: refused too."""
    cnn = NatureCNN(4, 16, image_size=(36, 36))
    msg = (rf"expects images shaped \(B, 4, 36, 36\) \(built with input_channels=4, image_size=\(36, 36\)\), "
           rf"got \(2, 4, {size[0]}, {size[1]}\).*NatureCNN\(input_channels=4, image_size=\({size[0]}, {size[1]}\)\)")
    for dtype in (torch.uint8, torch.float32):
        with pytest.raises(ValueError, match=msg):
            cnn(torch.zeros(2, 4, *size, dtype=dtype))
    assert cnn(torch.zeros(2, 4, 36, 36, dtype=torch.uint8)).shape == (2, 16)
    rebuilt = NatureCNN(4, 16, image_size=size)  # what the message says to do works
    assert rebuilt(torch.zeros(2, 4, *size, dtype=torch.uint8)).shape == (2, 16)


def test_actor_is_bounded_and_critic_has_two_heads():
    actor = Actor(10, 2, [32, 32], max_action=2.5)
    a = actor(torch.randn(64, 10) * 100)
    assert a.shape == (64, 2) and a.abs().max() <= 2.5
    critic = Critic(10, 2, [32])
    q1, q2 = critic(torch.randn(5, 10), a[:5])
    assert q1.shape == q2.shape == (5, 1) and not torch.equal(q1, q2)
    torch.testing.assert_close(critic.q1(torch.ones(5, 10), a[:5]), critic(torch.ones(5, 10), a[:5])[0])
    assert [m.out_features for m in mlp(3, [7, 5], 1) if isinstance(m, torch.nn.Linear)] == [7, 5, 1]


def test_dict_encoder_puts_features_first():
    cnn = NatureCNN(4, 8, image_size=(36, 36))
    enc = DictEncoder(cnn)
    obs = {"image": torch.randint(0, 256, (2, 4, 36, 36), dtype=torch.uint8), "vector": torch.arange(6.0).view(2, 3)}
    out = enc(obs)
    assert out.shape == (2, 11)
    torch.testing.assert_close(out[:, 8:], obs["vector"])
    torch.testing.assert_close(out[:, :8], cnn(obs["image"]))


def _reference_shift(img: torch.Tensor, dy: int, dx: int, pad: int) -> torch.Tensor:
    """Replicate-pad one (C, H, W) image and crop at offset (dy, dx) of the padded image."""
    h, w = img.shape[-2:]
    padded = F.pad(img[None].float(), (pad,) * 4, mode="replicate")[0].to(img.dtype)
    return padded[:, dy:dy + h, dx:dx + w]


@pytest.mark.parametrize("dtype", [torch.uint8, torch.float32])
def test_random_shift_is_a_replicate_padded_crop(dtype):
    pad, gen = 3, torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (16, 2, 12, 10)).to(dtype)
    out = random_shift(images, pad, gen)
    assert out.shape == images.shape and out.dtype == dtype
    shifted = 0
    for img, res in zip(images, out):
        matches = [(dy, dx) for dy in range(2 * pad + 1) for dx in range(2 * pad + 1)
                   if torch.equal(_reference_shift(img, dy, dx, pad), res)]
        assert matches, "output is not a shifted crop of its own input"
        shifted += matches[0] != (pad, pad)
    assert shifted > 8  # offsets really vary per image


def test_random_shift_pad_zero_and_determinism():
    images = torch.randint(0, 256, (4, 4, 36, 36), dtype=torch.uint8)
    assert random_shift(images, 0) is images
    a = random_shift(images, 4, torch.Generator().manual_seed(7))
    b = random_shift(images, 4, torch.Generator().manual_seed(7))
    assert torch.equal(a, b)
    c = random_shift(images.contiguous(memory_format=torch.channels_last), 4, torch.Generator().manual_seed(7))
    assert torch.equal(a, c)  # the memory layout of the input does not matter


def test_cnn_precision_setting():
    assert cnn_compute_dtype("float32", "cpu") is None
    assert cnn_compute_dtype("bfloat16", "cpu") is torch.bfloat16
    assert cnn_compute_dtype("auto", "cpu") in (None, torch.bfloat16)  # bfloat16 only where the CPU has it natively
    cnn = NatureCNN(4, 8, image_size=(36, 36))
    obs = {"image": torch.randint(0, 256, (2, 4, 36, 36), dtype=torch.uint8), "vector": torch.zeros(2, 3)}
    fast = DictEncoder(cnn, compute_dtype=torch.bfloat16)(obs)
    assert fast.dtype == torch.float32
    torch.testing.assert_close(fast, DictEncoder(cnn)(obs), rtol=2e-2, atol=2e-3)
