import dataclasses
import math
import time

import pytest
import torch

from models.hrnet import BasicBlock, HRNet, HRNetConfig, concat_branches


@pytest.fixture(scope="module")
def tiny() -> HRNet:
    torch.manual_seed(0)
    return HRNet(HRNetConfig.preset("tiny"))


def _blocks_per_branch(stage: torch.nn.Sequential) -> list[list[int]]:
    """For every module of a stage: the number of BasicBlocks in each branch."""
    return [
        [sum(isinstance(m, BasicBlock) for m in branch.modules()) for branch in module.branches]
        for module in stage
    ]


def test_branches_have_strides_4_8_16_32_and_configured_widths(tiny: HRNet) -> None:
    feats = tiny(torch.randn(2, 3, 64, 128))
    shapes = [tuple(f.shape) for f in feats]
    assert shapes == [(2, 8, 16, 32), (2, 16, 8, 16), (2, 32, 4, 8), (2, 64, 2, 4)]


def test_sizes_not_divisible_by_32_round_up_per_branch(tiny: HRNet) -> None:
    feats = tiny(torch.randn(2, 3, 70, 130))
    sizes = [tuple(f.shape[-2:]) for f in feats]
    expected = [(math.ceil(70 / s), math.ceil(130 / s)) for s in (4, 8, 16, 32)]
    assert sizes == expected


def test_concat_branches_stacks_all_widths_at_stride_4(tiny: HRNet) -> None:
    out = concat_branches(tiny(torch.randn(2, 3, 70, 130)))
    assert out.shape == (2, tiny.out_channels, 18, 33)
    assert tiny.out_channels == 8 + 16 + 32 + 64


def test_concat_branches_keeps_the_first_branch_unchanged() -> None:
    feats = [torch.randn(1, 2, 8, 8), torch.randn(1, 3, 4, 4), torch.ones(1, 1, 2, 2)]
    out = concat_branches(feats)
    assert torch.equal(out[:, :2], feats[0])
    assert torch.allclose(out[:, 5:], torch.ones(1, 1, 8, 8))


def test_w48_has_paper_widths_and_block_counts() -> None:
    model = HRNet(HRNetConfig.preset("w48"))
    assert model.widths == (48, 96, 192, 384)
    assert model.out_channels == 720
    assert len(model.layer1) == 4
    assert _blocks_per_branch(model.stage2) == [[4, 4]]
    assert _blocks_per_branch(model.stage3) == [[4, 4, 4]] * 4
    assert _blocks_per_branch(model.stage4) == [[4, 4, 4, 4]] * 3
    branch_channels = [module.branches[3][0].conv1.out_channels for module in model.stage4]
    assert branch_channels == [384] * 3


def test_w18s_has_small_v2_widths_and_block_counts() -> None:
    model = HRNet(HRNetConfig.preset("w18s"))
    assert model.widths == (18, 36, 72, 144)
    assert model.out_channels == 270
    assert len(model.layer1) == 2
    assert _blocks_per_branch(model.stage2) == [[2, 2]]
    assert _blocks_per_branch(model.stage3) == [[2, 2, 2]] * 3
    assert _blocks_per_branch(model.stage4) == [[2, 2, 2, 2]] * 2


def test_tiny_forward_backward_runs_under_a_second(tiny: HRNet) -> None:
    x = torch.randn(2, 3, 64, 128)
    with torch.no_grad():
        tiny(x)  # one-off kernel and thread-pool start-up is not the model's cost
    start = time.perf_counter()
    concat_branches(tiny(x)).square().mean().backward()
    elapsed = time.perf_counter() - start
    assert elapsed < 1.0
    assert tiny.conv1.weight.grad is not None


def test_unknown_preset_error_lists_valid_names() -> None:
    with pytest.raises(ValueError, match="'w32'.*tiny, w18s, w48"):
        HRNetConfig.preset("w32")


def test_config_rebuilt_from_lists_equals_preset() -> None:
    preset = HRNetConfig.preset("w18s")
    fields = {**dataclasses.asdict(preset), "widths": [18, 36, 72, 144], "stage_modules": [1, 3, 2]}
    assert HRNetConfig(**fields) == preset


def test_config_rejects_wrong_number_of_widths() -> None:
    with pytest.raises(ValueError, match="widths needs 4"):
        HRNetConfig(widths=(18, 36, 72))
