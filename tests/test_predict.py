import pytest
import torch
import torch.nn.functional as F
from torch import nn

from autolabel.errors import ConfigError
from models.predict import (
    FEATURE_STRIDE, PredictOptions, predict, predict_logits, run_windows, window_size, window_starts,
)
from models.teacher import ScaleOutput, Teacher, TeacherConfig, build_model

K = 19


def _images(n: int, h: int, w: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(n, 3, h, w, generator=torch.Generator().manual_seed(seed))


@pytest.fixture(scope="module")
def model() -> Teacher:
    torch.manual_seed(0)
    return build_model("tiny").eval()


class _CellModel(nn.Module):
    """A position-wise stand-in for the teacher: each stride-4 output cell sees only its own 4x4 input cell,
    so stitched windows must reproduce the whole-image output exactly. Records every window it runs on."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.config = TeacherConfig.preset("tiny", use_pointrend=False)
        self.project = nn.Conv2d(3, K, kernel_size=1)
        self.windows: list[tuple[int, int]] = []
        self.inference_mode: list[bool] = []

    def run_scale(self, images: torch.Tensor, attention: bool = True) -> ScaleOutput:
        self.windows.append((images.shape[-2], images.shape[-1]))
        self.inference_mode.append(torch.is_inference_mode_enabled())
        logits = F.max_pool2d(self.project(images), FEATURE_STRIDE, ceil_mode=True)  # (N, K, ceil(H/4), ceil(W/4))
        return ScaleOutput(logits, -logits, torch.sigmoid(logits[:, :1]) if attention else None, logits.flip(1))


def _recording(model: Teacher) -> list[tuple[int, int]]:
    """Record the input size of every `run_scale` call of `model`."""
    sizes: list[tuple[int, int]] = []
    run_scale = model.run_scale

    def recorded(images: torch.Tensor, attention: bool = True) -> ScaleOutput:
        sizes.append((images.shape[-2], images.shape[-1]))
        return run_scale(images, attention)

    model.run_scale = recorded
    return sizes


def test_probabilities_come_at_input_resolution_for_odd_sizes_and_sum_to_one(model):
    probs = predict(model, _images(2, 37, 53), scales=(0.5, 1.0))
    assert probs.shape == (2, K, 37, 53) and probs.dtype == torch.float32
    assert probs.min() >= 0
    assert torch.allclose(probs.sum(dim=1), torch.ones(2, 37, 53), atol=1e-5)


def test_scale_order_and_repeats_do_not_change_the_result(model):
    images = _images(1, 40, 56)
    ascending = predict(model, images, scales=(0.5, 1.0, 1.5))
    assert torch.equal(predict(model, images, scales=(1.5, 0.5, 1.0, 0.5)), ascending)


def test_single_scale_without_pointrend_is_softmax_of_upsampled_logits(model):
    images = _images(1, 37, 53)
    with torch.no_grad():
        logits = model.run_scale(images).logits  # (1, K, 10, 14)
    expected = torch.softmax(F.interpolate(logits, size=(37, 53), mode="bilinear", align_corners=False), dim=1)
    assert torch.allclose(predict(model, images, pointrend=False), expected, atol=1e-6)


@pytest.mark.parametrize("scales", [(1.0,), (0.5, 1.0), (0.5, 1.0, 2.0)])
def test_attention_head_runs_only_for_the_scales_below_the_highest(model, scales):
    inputs: list[tuple[int, int]] = []
    hook = model.attention.register_forward_hook(lambda module, args, out: inputs.append(tuple(args[0].shape[-2:])))
    try:
        predict(model, _images(1, 64, 96), scales=scales)
    finally:
        hook.remove()
    lower = sorted(scales)[:-1]
    assert sorted(inputs) == [(int(64 * s) // FEATURE_STRIDE, int(96 * s) // FEATURE_STRIDE) for s in lower]


@pytest.mark.parametrize("length", [1, 3, 4, 64, 65, 67, 100, 127, 301])
def test_window_starts_cover_every_pixel_with_stride_aligned_windows(length):
    for window in range(FEATURE_STRIDE, length + FEATURE_STRIDE, FEATURE_STRIDE):
        starts = window_starts(length, window)
        covered = torch.zeros(length, dtype=torch.bool)
        for start in starts[:-1]:
            covered[start : start + window] = True
        covered[starts[-1] :] = True  # the last window reaches the border
        assert covered.all(), (length, window, starts)
        assert starts[0] == 0 and starts == sorted(set(starts))
        assert all(s % FEATURE_STRIDE == 0 and s + min(window, length) <= length for s in starts)


@pytest.mark.parametrize(
    ("h", "w", "budget"),
    [(100, 150, 4096), (1000, 50, 4096), (70, 3000, 8000), (1024, 2048, 1024 * 1024), (2048, 4096, 2**21)],
)
def test_window_size_fits_the_budget_in_stride_multiples(h, w, budget):
    wh, ww = window_size(h, w, budget)
    assert wh * ww <= budget and wh <= h and ww <= w
    assert all(side % FEATURE_STRIDE == 0 or side == full for side, full in ((wh, h), (ww, w)))
    assert window_size(h, w, h * w) == (h, w)


@pytest.mark.parametrize(("h", "w"), [(96, 160), (150, 301)])
def test_stitched_windows_reproduce_a_position_wise_model_exactly(h, w):
    stub, images = _CellModel(), _images(2, h, w)
    whole = stub.run_scale(images)
    stitched = run_windows(stub, images, max_pixels=4096)
    assert len(stub.windows) > 2
    for full, windowed in zip(whole, stitched):
        assert windowed.shape == full.shape
        assert torch.allclose(windowed, full, atol=1e-6)


def test_windowed_multiscale_prediction_equals_whole_image_prediction_for_a_position_wise_model():
    stub, images = _CellModel(), _images(1, 120, 200)
    whole = predict(stub, images, scales=(0.5, 1.0, 2.0), pointrend=False)
    calls = len(stub.windows)
    windowed = predict(stub, images, scales=(0.5, 1.0, 2.0), pointrend=False, max_pixels=4096)
    assert len(stub.windows) - calls > calls
    assert torch.allclose(windowed, whole, atol=1e-6)


def test_real_model_runs_in_windows_within_the_budget_close_to_whole_image_output(model):
    images, budget = _images(1, 100, 150), 4096
    whole = predict(model, images, pointrend=False)
    sizes = _recording(model)
    try:
        windowed = predict(model, images, pointrend=False, max_pixels=budget)
    finally:
        del model.run_scale
    wh, ww = window_size(100, 150, budget)
    assert len(sizes) > 1
    assert all(h < wh + FEATURE_STRIDE and w < ww + FEATURE_STRIDE for h, w in sizes)  # last windows reach the border
    centred = [torch.log(p) - torch.log(p).mean(dim=1, keepdim=True) for p in (whole, windowed)]  # logits
    assert (centred[0] - centred[1]).norm() < 0.05 * centred[0].norm()  # receptive field differs near seams
    assert (whole.argmax(1) == windowed.argmax(1)).float().mean() > 0.95


@pytest.mark.parametrize("pointrend", [False, True])
def test_batch_size_does_not_change_the_result(model, pointrend):
    images = _images(3, 36, 52)
    one_batch = predict(model, images, scales=(0.5, 1.0), pointrend=pointrend, batch_size=3)
    split = predict(model, images, scales=(0.5, 1.0), pointrend=pointrend, batch_size=2)
    assert torch.allclose(split, one_batch, atol=1e-5)


def test_prediction_runs_under_inference_mode_without_gradients(model):
    stub = _CellModel()
    predict(stub, _images(1, 32, 48))
    assert stub.inference_mode and all(stub.inference_mode)
    probs = predict(model, _images(1, 32, 48))
    assert not probs.requires_grad
    assert all(p.grad is None for p in model.parameters())


def test_prediction_switches_a_training_model_to_eval_mode():
    torch.manual_seed(0)
    model = build_model("tiny").train()
    images = _images(1, 32, 48)
    first = predict(model, images)
    assert not model.training
    assert torch.equal(predict(model, images), first)


@pytest.mark.parametrize("scales", [(), (0.0,), (1.0, -0.5), (float("nan"),), (1.0, float("inf"))])
def test_invalid_scales_are_refused(scales):
    with pytest.raises(ConfigError, match="scales"):
        PredictOptions(scales=scales)


def test_flip_averages_the_probabilities_of_the_image_and_its_mirror(model):
    images = _images(1, 64, 96)
    plain = predict(model, images, pointrend=False)
    mirrored = predict(model, images.flip(-1), pointrend=False).flip(-1)
    torch.testing.assert_close(predict(model, images, pointrend=False, flip=True), (plain + mirrored) / 2)


def test_image_fusion_refines_at_most_the_point_budget_of_pixels_with_pointrend(model):
    config = TeacherConfig.preset("tiny", fusion="image")
    fused = Teacher(config).eval()
    fused.load_state_dict(model.state_dict())
    images = _images(1, 64, 128)
    plain = predict_logits(fused, images, PredictOptions(scales=(0.5, 1.0), pointrend=False))  # (1, K, 64, 128)
    refined = predict_logits(fused, images, PredictOptions(scales=(0.5, 1.0), pointrend=True))
    _, points = config.pointrend.subdivision((16, 32), (64, 128))
    changed = (plain != refined).any(dim=1).sum().item()
    assert plain.shape == refined.shape == (1, config.num_classes, 64, 128)
    assert 0 < changed <= points
