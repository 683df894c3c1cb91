import numpy as np
import pytest
import torch

from autolabel.labels import IGNORE
from autolabel.transforms import (
    IMAGENET_MEAN,
    AugmentConfig,
    Pair,
    color_jitter,
    compose,
    crop,
    eval_transform,
    hflip,
    random_scale,
    rescale,
    to_tensor,
    train_transform,
)

H, W = 64, 128


def _pair(seed: int = 0, centre: tuple[int, int] | None = None) -> Pair:
    """Random image; label of 8x8 blocks with train ids 0..18 and ignore."""
    rng = np.random.default_rng(seed)
    image = rng.integers(0, 256, (H, W, 3), dtype=np.uint8)
    values = np.array([*range(19), IGNORE], dtype=np.uint8)
    blocks = rng.choice(values, size=(H // 8, W // 8)).astype(np.uint8)
    label = np.kron(blocks, np.ones((8, 8), dtype=np.uint8))
    return Pair(image, label, centre)


def _coordinate_image() -> np.ndarray:
    """Image whose pixels encode their own (y, x): R = y, G = x."""
    ys, xs = np.mgrid[:H, :W]
    return np.stack([ys, xs, np.zeros_like(ys)], axis=-1).astype(np.uint8)


def test_random_scale_resizes_image_and_label_together():
    out = random_scale(_pair(), np.random.default_rng(1), scale=(0.5, 2.0))
    assert out.image.shape[:2] == out.label.shape
    assert out.label.shape != (H, W)
    assert 0.5 * H <= out.label.shape[0] <= 2.0 * H


@pytest.mark.parametrize("factor", [0.55, 1.37, 2.0])
def test_rescale_uses_nearest_for_labels(factor):
    pair = _pair()
    out = rescale(pair, factor)
    assert set(np.unique(out.label)) <= set(np.unique(pair.label))


def test_rescale_moves_the_centre_with_the_pixels():
    pair = _pair(centre=(20, 45))
    out = rescale(pair, 1.5)
    assert out.label[out.centre] == pair.label[pair.centre]


def test_crop_pads_label_with_ignore_and_image_with_zero():
    pair = Pair(np.full((20, 30, 3), 200, np.uint8), np.zeros((20, 30), np.uint8))
    out = crop(pair, np.random.default_rng(0), size=(40, 50))
    assert out.image.shape == (40, 50, 3) and out.label.shape == (40, 50)
    assert (out.label == 0).sum() == 20 * 30
    assert set(np.unique(out.label)) == {0, IGNORE}
    assert np.array_equal(out.image[out.label == IGNORE], np.zeros(((40 * 50) - 600, 3), np.uint8))


def test_random_crop_of_a_larger_image_needs_no_padding():
    pair = Pair(np.ones((H, W, 3), np.uint8), np.zeros((H, W), np.uint8))
    out = crop(pair, np.random.default_rng(3), size=(32, 48))
    assert out.label.shape == (32, 48)
    assert not (out.label == IGNORE).any()


@pytest.mark.parametrize("centre", [(0, 0), (63, 127), (10, 100), (32, 64), (50, 3)])
@pytest.mark.parametrize("size", [(16, 24), (100, 200)])
def test_centred_crop_contains_its_centre(centre, size):
    pair = Pair(_coordinate_image(), np.zeros((H, W), np.uint8), centre)
    out = crop(pair, np.random.default_rng(0), size=size)
    assert 0 <= out.centre[0] < size[0] and 0 <= out.centre[1] < size[1]
    assert tuple(out.image[out.centre][:2]) == centre


def test_centred_crop_is_centred_away_from_borders():
    pair = Pair(_coordinate_image(), np.zeros((H, W), np.uint8), (30, 60))
    out = crop(pair, np.random.default_rng(0), size=(16, 24))
    assert out.centre == (8, 12)


def test_hflip_flips_image_label_and_centre_together():
    pair = _pair(centre=(5, 10))
    out = hflip(pair)
    assert np.array_equal(out.image, pair.image[:, ::-1])
    assert np.array_equal(out.label, pair.label[:, ::-1])
    assert out.label[out.centre] == pair.label[pair.centre]


def test_color_jitter_changes_the_image_but_not_the_label():
    pair = _pair()
    out = color_jitter(pair, np.random.default_rng(0), strength=0.25)
    assert out.image.dtype == np.uint8 and out.image.shape == pair.image.shape
    assert not np.array_equal(out.image, pair.image)
    assert np.array_equal(out.label, pair.label)


def test_color_jitter_rejects_hue_beyond_half_a_turn():
    with pytest.raises(ValueError, match="jitter"):
        color_jitter(_pair(), np.random.default_rng(0), strength=0.6)


def test_to_tensor_normalises_with_imagenet_statistics():
    image = np.broadcast_to(np.rint(IMAGENET_MEAN).astype(np.uint8), (4, 6, 3)).copy()
    label = np.full((4, 6), IGNORE, np.uint8)
    x, y = to_tensor(Pair(image, label))
    assert x.shape == (3, 4, 6) and x.dtype == torch.float32
    assert y.shape == (4, 6) and y.dtype == torch.int64
    assert x.abs().max() < 0.01
    assert (y == IGNORE).all()


def test_compose_applies_augments_in_order():
    def flip(pair: Pair, rng: np.random.Generator) -> Pair:
        return hflip(pair)

    def left_half(pair: Pair, rng: np.random.Generator) -> Pair:
        return Pair(pair.image[:, : W // 2].copy(), pair.label[:, : W // 2].copy())

    pair = _pair()
    out = compose(flip, left_half)(pair, np.random.default_rng(0))
    assert np.array_equal(out.label, pair.label[:, ::-1][:, : W // 2])


def test_train_transform_gives_crops_with_valid_labels():
    x, y = train_transform(AugmentConfig(crop=(32, 48)))(_pair(), np.random.default_rng(0))
    assert x.shape == (3, 32, 48) and x.dtype == torch.float32
    assert y.shape == (32, 48) and y.dtype == torch.int64
    assert set(y.unique().tolist()) <= {*range(19), IGNORE}


def test_train_transform_is_deterministic_for_a_seed():
    transform = train_transform(AugmentConfig.preset("tiny"))
    a = transform(_pair(), np.random.default_rng(7))
    b = transform(_pair(), np.random.default_rng(7))
    c = transform(_pair(), np.random.default_rng(8))
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert not torch.equal(a[0], c[0])


def test_eval_transform_only_normalises():
    pair = _pair()
    x, y = eval_transform()(pair, np.random.default_rng(0))
    ref_x, ref_y = to_tensor(pair)
    assert torch.equal(x, ref_x) and torch.equal(y, ref_y)


def test_augment_config_rejects_bad_values_and_unknown_presets():
    with pytest.raises(ValueError, match="scale"):
        AugmentConfig(crop=(8, 8), scale=(2.0, 0.5))
    with pytest.raises(ValueError, match="preset"):
        AugmentConfig.preset("huge")


def test_pair_rejects_label_of_another_size():
    with pytest.raises(ValueError, match="label"):
        Pair(np.zeros((4, 6, 3), np.uint8), np.zeros((4, 5), np.uint8))
