"""Fitting some parts of a teacher with the rest frozen; which heads a checkpoint leaves untrained."""

from __future__ import annotations

import pytest
import torch

from autolabel.errors import ConfigError
from models.parts import freeze_except, parse_parts, train_mode, untrained_after
from models.teacher import Teacher, TeacherConfig


@pytest.fixture
def model() -> Teacher:
    torch.manual_seed(0)
    return Teacher(TeacherConfig.preset("tiny"))


def test_frozen_parts_need_no_gradient_and_only_the_named_ones_are_returned(model):
    params = freeze_except(model, ("point_head",))
    assert {id(p) for p in params} == {id(p) for p in model.point_head.parameters()}
    assert not any(p.requires_grad for p in model.backbone.parameters())
    assert not any(p.requires_grad for p in model.ocr.parameters())
    assert not any(p.requires_grad for p in model.attention.parameters())


def test_train_mode_keeps_frozen_parts_batchnorm_in_eval_so_its_statistics_stay(model):
    train_mode(model, ("point_head",))
    assert model.point_head.training and not model.backbone.training and not model.attention.training
    before = model.backbone.bn1.running_mean.clone()
    with torch.no_grad():
        model.run_scale(torch.randn(2, 3, 32, 64))
    assert torch.equal(model.backbone.bn1.running_mean, before)


def test_train_mode_without_parts_trains_everything(model):
    train_mode(model.eval(), None)
    assert all(m.training for m in model.modules())


def test_part_names_are_validated_and_ordered():
    assert parse_parts(["point_head", " attention", "point_head"]) == ("attention", "point_head")
    with pytest.raises(ConfigError, match="decoder"):
        parse_parts(["decoder"])


def test_fitted_heads_leave_the_untrained_list():
    assert untrained_after(["attention", "point_head"], ["point_head"]) == ["attention"]
    assert untrained_after([], ["backbone"]) == []
