import pytest
import torch
import torch.nn.functional as F
from torch import nn

from models.pointrend import (
    POINTREND_PRESETS,
    PointHead,
    PointRendConfig,
    calculate_uncertainty,
    get_uncertain_point_coords_on_grid,
    get_uncertain_point_coords_with_randomness,
    point_loss,
    point_sample,
    point_train_targets,
    predict_points,
    subdivision_defaults,
    subdivision_inference,
    subdivision_sizes,
)

K = 19


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _up2(x: torch.Tensor) -> torch.Tensor:
    return F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=False)


class _ConstantHead(nn.Module):
    """Point head predicting the same far-off logits everywhere, so refined cells are easy to spot."""

    def forward(self, fine: torch.Tensor, coarse: torch.Tensor) -> torch.Tensor:
        return torch.full_like(coarse, 1000.0)


def test_uncertainty_is_second_best_minus_best_logit():
    logits = torch.tensor([[5.0, 1.0, 0.0], [2.0, 2.0, 0.0], [0.0, 3.0, 2.5]]).T.reshape(1, 3, 3, 1)
    assert torch.equal(calculate_uncertainty(logits), torch.tensor([-4.0, 0.0, -0.5]).reshape(1, 1, 3, 1))


def test_uncertainty_is_higher_for_less_certain_points():
    certain, unsure = torch.tensor([9.0, 0.0]), torch.tensor([1.0, 0.5])
    u = calculate_uncertainty(torch.stack([certain, unsure], dim=1).unsqueeze(0))  # (1, 1, 2)
    assert u[0, 0, 1] > u[0, 0, 0]


def test_point_sample_at_cell_centres_reproduces_the_map():
    features = torch.randn(2, 4, 5, 7, generator=_gen())
    indices, coords = get_uncertain_point_coords_on_grid(torch.rand(2, 1, 5, 7, generator=_gen(1)), 35)
    expected = torch.gather(features.flatten(2), 2, indices.unsqueeze(1).expand(-1, 4, -1))  # (2, 4, 35)
    assert torch.allclose(point_sample(features, coords), expected, atol=1e-6)


def test_point_sample_at_finer_cell_centres_equals_bilinear_upsampling():
    features = torch.randn(1, 3, 6, 8, generator=_gen())
    indices, coords = get_uncertain_point_coords_on_grid(torch.zeros(1, 1, 12, 16), 12 * 16)
    upsampled = _up2(features).flatten(2)[:, :, indices[0]]  # (1, 3, P)
    assert torch.allclose(point_sample(features, coords), upsampled, atol=1e-6)


def test_grid_points_are_the_most_uncertain_cells_at_exact_centres():
    uncertainty = torch.full((1, 1, 4, 6), -5.0)
    uncertainty[0, 0, 1, 4] = 0.0
    uncertainty[0, 0, 3, 0] = -1.0
    indices, coords = get_uncertain_point_coords_on_grid(uncertainty, 2)
    assert indices.tolist() == [[1 * 6 + 4, 3 * 6 + 0]]
    expected = torch.tensor([[[(4 + 0.5) / 6, (1 + 0.5) / 4], [(0 + 0.5) / 6, (3 + 0.5) / 4]]])
    assert torch.equal(coords, expected)


def test_grid_points_never_exceed_the_cells():
    indices, coords = get_uncertain_point_coords_on_grid(torch.rand(2, 1, 3, 3), 100)
    assert indices.shape == (2, 9) and coords.shape == (2, 9, 2)
    assert sorted(indices[0].tolist()) == list(range(9))


def _one_uncertain_half(n: int = 2, h: int = 16, w: int = 16) -> torch.Tensor:
    """Logits sure of class 0 everywhere except x < 0.5, where classes 0 and 1 tie."""
    logits = torch.zeros(n, 3, h, w)
    logits[:, 0] = 10.0
    logits[:, 1, :, : w // 2] = 10.0
    return logits


def test_importance_sampling_puts_the_uncertain_share_in_the_uncertain_region():
    coords = get_uncertain_point_coords_with_randomness(_one_uncertain_half(), 256, 3.0, 0.75, generator=_gen())
    assert coords.shape == (2, 256, 2)
    uncertain = coords[:, :192]
    assert (uncertain[..., 0] < 0.5).all()
    assert coords.min() >= 0 and coords.max() <= 1


def test_point_selection_carries_no_gradient():
    logits = _one_uncertain_half().requires_grad_(True)
    coords = get_uncertain_point_coords_with_randomness(logits, 32, generator=_gen())
    labels = torch.zeros(2, 64, 64, dtype=torch.long)
    targets_coords, _ = point_train_targets(logits, labels, PointRendConfig.preset("tiny"))
    assert not coords.requires_grad and not targets_coords.requires_grad


def test_point_labels_are_nearest_label_pixels_not_interpolated():
    labels = torch.arange(16, dtype=torch.uint8).reshape(1, 4, 4)
    labels[0, 0, 0] = 255
    config = PointRendConfig(train_points=64, importance_ratio=0.0)
    coords, point_labels = point_train_targets(torch.randn(1, K, 2, 2), labels, config, generator=_gen())
    cols = (coords[0, :, 0] * 4).floor().long().clamp(max=3)
    rows = (coords[0, :, 1] * 4).floor().long().clamp(max=3)
    assert point_labels.dtype == torch.long
    assert torch.equal(point_labels[0], labels[0, rows, cols].long())


def test_point_loss_ignores_unlabelled_points():
    logits = torch.randn(1, K, 4, generator=_gen())
    labels = torch.tensor([[3, 255, 255, 7]])
    expected = F.cross_entropy(logits[:, :, [0, 3]], labels[:, [0, 3]])
    assert torch.allclose(point_loss(logits, labels), expected)


def test_point_loss_without_labelled_points_is_zero_and_differentiable():
    logits = torch.randn(1, K, 4, requires_grad=True)
    loss = point_loss(logits, torch.full((1, 4), 255))
    loss.backward()
    assert loss.item() == 0.0 and logits.grad is not None


def test_point_loss_with_class_weights_is_the_weighted_mean_over_labelled_points():
    logits = torch.randn(1, K, 5, generator=_gen())
    labels = torch.tensor([[3, 3, 255, 7, 3]])
    weights = torch.ones(K)
    weights[7] = 4.0
    expected = F.cross_entropy(logits, labels, weight=weights, ignore_index=255)
    assert torch.allclose(point_loss(logits, labels, class_weights=weights), expected)


def test_point_loss_class_weights_make_the_rare_class_errors_cost_more():
    logits = torch.zeros(1, K, 4)
    logits[0, 3] = 5.0  # every point predicted as class 3, one of them is class 7
    labels = torch.tensor([[3, 3, 3, 7]])
    weights = torch.ones(K)
    weights[7] = 10.0
    assert point_loss(logits, labels, class_weights=weights) > point_loss(logits, labels)


def test_point_loss_trains_point_head_and_coarse_logits():
    head = PointHead(fine_channels=8, num_classes=K, fc_channels=16)
    coarse = torch.randn(2, K, 16, 16, requires_grad=True)
    fine = torch.randn(2, 8, 16, 16)
    coords, labels = point_train_targets(coarse, torch.randint(0, K, (2, 64, 64)), PointRendConfig.preset("tiny"))
    point_loss(predict_points(head, fine, coarse, coords), labels).backward()
    assert coarse.grad is not None and coarse.grad.abs().sum() > 0
    assert all(p.grad is not None for p in head.parameters())


def test_point_head_maps_points_to_class_logits():
    head = PointHead(fine_channels=8, num_classes=K, fc_channels=32, num_fc=3)
    out = head(torch.randn(2, 8, 50), torch.randn(2, K, 50))
    assert out.shape == (2, K, 50)


def test_point_head_sees_the_coarse_logits_at_every_layer():
    head = PointHead(fine_channels=8, num_classes=K, fc_channels=32, num_fc=3)
    assert [fc.in_channels for fc in head.fcs] == [8 + K, 32 + K, 32 + K]
    assert head.classifier.in_channels == 32 + K


def test_presets_tiny_and_default():
    assert PointRendConfig.preset("default") == PointRendConfig()
    tiny = PointRendConfig.preset("tiny")
    assert tiny.fc_channels == 32 and tiny.train_points < PointRendConfig().train_points
    assert set(POINTREND_PRESETS) == {"tiny", "default"}


def test_unknown_preset_names_the_valid_ones():
    with pytest.raises(ValueError, match="default, tiny"):
        PointRendConfig.preset("huge")


def test_subdivision_defaults_match_the_cityscapes_config():
    assert subdivision_defaults((256, 512), (1024, 2048)) == (2, 8192)


def test_subdivision_points_scale_with_the_output_side_as_boundaries_do():
    assert subdivision_defaults((32, 64), (128, 256)) == (2, 1024)
    assert subdivision_defaults((128, 256), (512, 1024)) == (2, 4096)
    assert subdivision_defaults((64, 64), (64, 64))[0] == 0


def test_subdivision_steps_cover_an_odd_sized_output():
    assert subdivision_defaults((33, 65), (129, 257))[0] == 2


def test_subdivision_points_never_exceed_the_output_pixels():
    steps, points = subdivision_defaults((2, 3), (5, 7))
    assert steps == 2 and 1 <= points <= 5 * 7


def test_config_overrides_the_derived_subdivision():
    config = PointRendConfig(subdivision_steps=1, subdivision_points=100)
    assert config.subdivision((256, 512), (1024, 2048)) == (1, 100)
    assert PointRendConfig().subdivision((256, 512), (1024, 2048)) == (2, 8192)


def test_subdivision_sizes_double_and_end_at_the_output():
    assert subdivision_sizes((33, 65), (129, 257), 2) == [(66, 130), (129, 257)]
    assert subdivision_sizes((45, 45), (180, 180), 3) == [(90, 90), (180, 180), (180, 180)]


def test_subdivision_turns_45_into_180_in_two_steps():
    head = PointHead(fine_channels=8, num_classes=K, fc_channels=16)
    with torch.no_grad():
        out = subdivision_inference(torch.randn(1, K, 45, 45), torch.randn(1, 8, 45, 45), head, (180, 180), 2, 8196)
    assert out.shape == (1, K, 180, 180)


def test_subdivision_reaches_output_sizes_that_are_not_powers_of_two():
    coarse, fine = torch.randn(1, K, 33, 65), torch.randn(1, 4, 33, 65)
    out = subdivision_inference(coarse, fine, _ConstantHead(), (129, 257), 2, 50)
    assert out.shape == (1, K, 129, 257)


def test_subdivision_changes_only_the_most_uncertain_cells():
    coarse = torch.randn(2, K, 12, 10, generator=_gen())
    out = subdivision_inference(coarse, torch.randn(2, 4, 12, 10), _ConstantHead(), (24, 20), 1, 30)
    upsampled = _up2(coarse)
    changed = (out != upsampled).any(dim=1).flatten(1)  # (N, H*W)
    expected, _ = get_uncertain_point_coords_on_grid(calculate_uncertainty(upsampled), 30)
    for n in range(2):
        assert sorted(changed[n].nonzero().flatten().tolist()) == sorted(expected[n].tolist())


def test_subdivision_refines_every_cell_when_points_cover_the_map():
    out = subdivision_inference(torch.randn(1, K, 4, 4), torch.randn(1, 4, 4, 4), _ConstantHead(), (8, 8), 1, 1000)
    assert (out == 1000.0).all()


def test_subdivision_feeds_the_point_head_the_original_coarse_logits():
    seen = []

    class Recorder(nn.Module):
        def forward(self, fine: torch.Tensor, coarse: torch.Tensor) -> torch.Tensor:
            seen.append(coarse)
            return torch.full_like(coarse, 1000.0)

    coarse = torch.randn(1, K, 4, 4, generator=_gen())
    subdivision_inference(coarse, torch.randn(1, 2, 4, 4), Recorder(), (16, 16), 2, 5)
    # the running map holds 1000 at refined cells after step 1; the original coarse logits are small
    assert len(seen) == 2
    assert all(c.abs().max() < coarse.abs().max() + 1e-5 for c in seen)


def test_subdivision_with_zero_steps_only_resizes():
    coarse = torch.randn(1, K, 8, 8)
    out = subdivision_inference(coarse, torch.randn(1, 4, 8, 8), _ConstantHead(), (8, 8), 0, 10)
    assert torch.equal(out, coarse)
