import pytest
import torch
import torch.nn.functional as F

from models.mscale import MSCALE_TRAIN_SCALES, AttentionHead, fuse_pair, fuse_scales, scaled

K = 3


def _logits(h: int, w: int, seed: int) -> torch.Tensor:
    return torch.randn(2, K, h, w, generator=torch.Generator().manual_seed(seed))


def _up(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    return F.interpolate(x, size=size, mode="bilinear", align_corners=False)


def test_attention_head_gives_one_map_in_unit_interval_per_pixel():
    head = AttentionHead(in_channels=16, mid_channels=8)
    attn = head(torch.randn(2, 16, 8, 12))
    assert attn.shape == (2, 1, 8, 12)
    assert attn.min() >= 0 and attn.max() <= 1


def test_train_scales_are_the_half_and_full_pair():
    assert MSCALE_TRAIN_SCALES == (0.5, 1.0)


def test_scaled_resizes_bilinearly_and_keeps_scale_one():
    images = torch.rand(2, 3, 64, 128)
    assert scaled(images, 1.0) is images
    half = scaled(images, 0.5)
    assert half.shape == (2, 3, 32, 64)
    assert torch.allclose(half, _up(images, (32, 64)))
    assert scaled(images, 2.0).shape == (2, 3, 128, 256)


def test_scaled_rejects_non_positive_scale():
    with pytest.raises(ValueError, match="scale"):
        scaled(torch.rand(1, 3, 8, 8), 0.0)


def test_fuse_pair_with_full_attention_takes_the_low_scale_everywhere():
    lo, hi = _logits(8, 16, 0), _logits(16, 32, 1)
    joint = fuse_pair(lo, hi, torch.ones(2, 1, 8, 16))
    assert joint.shape == hi.shape
    assert torch.allclose(joint, _up(lo, (16, 32)))


def test_fuse_pair_with_zero_attention_takes_the_high_scale_everywhere():
    lo, hi = _logits(8, 16, 0), _logits(16, 32, 1)
    assert torch.equal(fuse_pair(lo, hi, torch.zeros(2, 1, 8, 16)), hi)


def test_fuse_pair_passes_gradient_to_the_attention():
    lo, hi = _logits(8, 16, 0), _logits(16, 32, 1)
    attn = torch.full((2, 1, 8, 16), 0.5, requires_grad=True)
    fuse_pair(lo, hi, attn).square().sum().backward()
    assert attn.grad is not None and attn.grad.abs().sum() > 0


def test_fuse_pair_rejects_attention_of_another_size():
    with pytest.raises(ValueError, match="attention"):
        fuse_pair(_logits(8, 16, 0), _logits(16, 32, 1), torch.ones(2, 1, 16, 32))


def _three_scales() -> tuple[dict[float, torch.Tensor], dict[float, torch.Tensor]]:
    preds = {2.0: _logits(32, 64, 2), 1.0: _logits(16, 32, 1), 0.5: _logits(8, 16, 0)}
    attns = {s: torch.rand(2, 1, *p.shape[-2:], generator=torch.Generator().manual_seed(7)) for s, p in preds.items()}
    return preds, attns


def test_fuse_scales_output_is_at_the_highest_scale_map_size():
    preds, attns = _three_scales()
    assert fuse_scales(preds, attns).shape == (2, K, 32, 64)


def test_fuse_scales_blends_from_the_highest_scale_down():
    preds, attns = _three_scales()
    size = (32, 64)
    expected = preds[2.0]
    for s in (1.0, 0.5):
        expected = _up(attns[s] * preds[s], size) + (1 - _up(attns[s], size)) * expected
    assert torch.allclose(fuse_scales(preds, attns), expected)


def test_fuse_scales_lets_the_lowest_scale_win_where_its_attention_is_one():
    preds, attns = _three_scales()
    attns[0.5] = torch.ones_like(attns[0.5])
    assert torch.allclose(fuse_scales(preds, attns), _up(preds[0.5], (32, 64)))


def test_fuse_scales_does_not_depend_on_dict_order():
    preds, attns = _three_scales()
    reordered_preds = {s: preds[s] for s in (0.5, 2.0, 1.0)}
    reordered_attns = {s: attns[s] for s in (1.0, 0.5, 2.0)}
    assert torch.equal(fuse_scales(preds, attns), fuse_scales(reordered_preds, reordered_attns))


def test_fuse_scales_ignores_the_highest_scale_attention():
    preds, attns = _three_scales()
    without_highest = {s: a for s, a in attns.items() if s != 2.0}
    assert torch.equal(fuse_scales(preds, attns), fuse_scales(preds, without_highest))


def test_fuse_scales_of_one_scale_returns_its_prediction():
    pred = _logits(16, 32, 1)
    assert fuse_scales({1.0: pred}, {}) is pred


def test_fuse_scales_matches_fuse_pair_on_the_training_pair():
    lo, hi = _logits(8, 16, 0), _logits(16, 32, 1)
    attn = torch.rand(2, 1, 8, 16)
    assert torch.equal(fuse_scales({0.5: lo, 1.0: hi}, {0.5: attn}), fuse_pair(lo, hi, attn))


def test_fuse_scales_names_the_scale_missing_its_attention():
    preds, attns = _three_scales()
    del attns[0.5]
    with pytest.raises(ValueError, match="0.5"):
        fuse_scales(preds, attns)
