import json

import pytest
import torch

from models.ocr import AUX_LOSS_WEIGHT
from models.teacher import TEACHER_PRESETS, Teacher, TeacherConfig, build_model

IGNORE = 255


def _batch(seed: int = 0, ignore_all: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """Two 32x64 images and labels; batch 2 keeps BatchNorm valid on the 1x1 stride-32 map of scale 0.5."""
    gen = torch.Generator().manual_seed(seed)
    images = torch.randn(2, 3, 32, 64, generator=gen)
    labels = torch.randint(0, 19, (2, 32, 64), generator=gen)
    return images, torch.full_like(labels, IGNORE) if ignore_all else labels


def _model(**overrides) -> Teacher:
    torch.manual_seed(0)
    return build_model(TeacherConfig.preset("tiny", **overrides))


def _grads_of(module: torch.nn.Module) -> list[torch.Tensor | None]:
    return [p.grad for p in module.parameters()]


def _backward(model: Teacher, ignore_all: bool = False) -> dict[str, torch.Tensor]:
    terms = model.losses(*_batch(ignore_all=ignore_all))
    sum(terms.values()).backward()
    return terms


def test_default_tiny_teacher_trains_seg_aux_and_point_terms():
    assert set(_model().losses(*_batch())) == {"seg", "aux", "point"}


def test_aux_term_is_the_aux_loss_weighted_0_4():
    weighted, unweighted = _model(), _model(aux_weight=1.0)
    unweighted.load_state_dict(weighted.state_dict())
    weighted.eval(), unweighted.eval()  # deterministic: no dropout, fixed BatchNorm statistics
    images, labels = _batch()
    ratio = weighted.losses(images, labels)["aux"] / unweighted.losses(images, labels)["aux"]
    assert TeacherConfig.preset("tiny").aux_weight == AUX_LOSS_WEIGHT == 0.4
    assert ratio.item() == pytest.approx(0.4, rel=1e-5)


def test_class_balance_weighs_the_point_term_as_it_weighs_the_segmentation_terms():
    plain, balanced = _model(), _model(class_balance=0.5)
    with torch.no_grad():
        plain.point_head.classifier.bias[0] = 10.0  # the point head predicts class 0 everywhere
    balanced.load_state_dict(plain.state_dict())
    plain.eval(), balanced.eval()
    images, labels = _batch()
    labels[:, :, 8:] = 0  # class 0 holds most pixels: the balanced term weighs the others' errors up
    point_terms = []
    for model in (plain, balanced):
        torch.manual_seed(0)  # the same training points for both
        point_terms.append(model.losses(images, labels)["point"].item())
    assert point_terms[1] > 1.2 * point_terms[0]


def test_scales_term_appears_only_with_a_positive_scale_loss_weight():
    assert "scales" not in _model().losses(*_batch())
    assert set(_model(scale_loss_weight=0.05).losses(*_batch())) == {"seg", "aux", "scales", "point"}


def test_no_point_term_and_no_point_head_gradient_without_pointrend():
    model = _model(use_pointrend=False)
    terms = _backward(model)
    assert set(terms) == {"seg", "aux"}
    assert all(g is None for g in _grads_of(model.point_head))


def test_single_scale_training_leaves_attention_out_of_the_loss():
    model = _model(use_mscale=False, scale_loss_weight=0.05)
    terms = _backward(model)
    assert "scales" not in terms
    assert all(g is None for g in _grads_of(model.attention))


def test_loss_terms_are_finite_and_backward_reaches_backbone_attention_and_point_head():
    model = _model()
    terms = _backward(model)
    assert all(torch.isfinite(t) and t.dim() == 0 for t in terms.values())
    for part in (model.backbone, model.ocr, model.attention, model.point_head):
        grads = [g for g in _grads_of(part) if g is not None]
        assert grads and all(torch.isfinite(g).all() for g in grads)
        assert any(g.abs().sum() > 0 for g in grads)


def test_all_ignore_labels_give_zero_loss_and_finite_gradients():
    model = _model(scale_loss_weight=0.05)
    terms = _backward(model, ignore_all=True)
    assert set(terms) == {"seg", "aux", "scales", "point"}
    assert all(t.item() == 0.0 for t in terms.values())
    assert all(torch.isfinite(g).all() for g in _grads_of(model) if g is not None)


def test_run_scale_without_attention_skips_the_head_and_keeps_the_logits():
    model, images = _model().eval(), _batch()[0]
    with torch.no_grad():
        full, lean = model.run_scale(images), model.run_scale(images, attention=False)
    assert full.attention.shape == (2, 1, 8, 16) and lean.attention is None
    assert torch.equal(lean.logits, full.logits) and torch.equal(lean.fine, full.fine)


def test_pair_training_runs_the_attention_head_on_the_low_scale_only():
    model, inputs = _model(), []
    model.attention.register_forward_hook(lambda module, args, out: inputs.append(tuple(args[0].shape[-2:])))
    model.losses(*_batch())
    assert inputs == [(4, 8)]  # stride 4 of the 0.5-scale 16x32 input


@pytest.mark.parametrize("name", sorted(TEACHER_PRESETS))
def test_config_round_trips_through_a_plain_dict(name):
    config = TeacherConfig.preset(name, scale_loss_weight=0.05)
    assert TeacherConfig.from_dict(config.to_dict()) == config
    assert TeacherConfig.from_dict(json.loads(json.dumps(config.to_dict()))) == config  # lists, not tuples


def test_preset_overrides_replace_only_the_named_fields():
    config = TeacherConfig.preset("w18s", use_pointrend=False)
    assert not config.use_pointrend
    assert config.backbone == TEACHER_PRESETS["w18s"].backbone


def test_unknown_preset_error_lists_the_valid_presets():
    with pytest.raises(ValueError, match=r"'w32'.*tiny, w18s, w48"):
        TeacherConfig.preset("w32")


def test_w48_preset_has_the_papers_widths():
    config = TeacherConfig.preset("w48")
    assert config.backbone.widths == (48, 96, 192, 384)
    assert sum(config.backbone.widths) == 720
    assert config.backbone.stage_modules == (1, 4, 3)
    assert (config.backbone.stage1_blocks, config.backbone.branch_blocks) == (4, 4)
    assert (config.ocr.mid_channels, config.ocr.key_channels) == (512, 256)
    assert config.attention_channels == 256
    assert (config.pointrend.fc_channels, config.pointrend.num_fc, config.pointrend.train_points) == (256, 3, 2048)
    assert config.num_classes == 19 and config.use_mscale and config.use_pointrend


def test_w18s_preset_is_hrnet_w18_small_v2():
    backbone = TeacherConfig.preset("w18s").backbone
    assert backbone.widths == (18, 36, 72, 144)
    assert (backbone.stage_modules, backbone.stage1_blocks, backbone.branch_blocks) == ((1, 3, 2), 2, 2)


def test_build_model_accepts_a_preset_name_or_a_config():
    config = TeacherConfig.preset("tiny", use_mscale=False)
    assert build_model("tiny").config == TEACHER_PRESETS["tiny"]
    assert build_model(config).config == config
