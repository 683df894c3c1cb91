import pytest
import torch

from models.ocr import (
    OCRConfig,
    OCRHead,
    OCROutput,
    object_relation,
    spatial_gather,
)


def test_head_outputs_logits_aux_and_mid_at_input_resolution() -> None:
    torch.manual_seed(0)
    head = OCRHead(in_channels=120, num_classes=19, config=OCRConfig.preset("tiny"))
    out = head(torch.randn(2, 120, 18, 33))
    assert isinstance(out, OCROutput)
    assert out.logits.shape == (2, 19, 18, 33)
    assert out.aux_logits.shape == (2, 19, 18, 33)
    assert out.mid.shape == (2, 32, 18, 33)


def test_head_backward_reaches_the_aux_branch_through_the_main_logits() -> None:
    torch.manual_seed(0)
    head = OCRHead(in_channels=8, num_classes=3, config=OCRConfig.preset("tiny"))
    head(torch.randn(2, 8, 6, 7)).logits.sum().backward()
    assert head.aux_head[-1].weight.grad is not None
    assert head.aux_head[-1].weight.grad.abs().sum() > 0


def test_spatial_gather_of_one_hot_regions_is_the_mean_of_their_pixels() -> None:
    feats = torch.arange(2 * 2 * 3, dtype=torch.float32).reshape(1, 2, 2, 3)  # (1, C=2, 2, 3)
    region = torch.zeros(1, 2, 2, 3, dtype=torch.bool)
    region[0, 0, 0, :] = True  # class 0 owns the top row
    region[0, 1, 1, :2] = True  # class 1 owns two bottom pixels
    logits = torch.where(region, 0.0, -1e4)  # softmax over pixels ~ uniform within the region

    centres = spatial_gather(feats, logits)

    expected = torch.stack(
        [feats[0, :, 0, :].mean(dim=1), feats[0, :, 1, :2].mean(dim=1)]
    ).unsqueeze(0)  # (1, K=2, C=2)
    assert centres.shape == (1, 2, 2)
    assert torch.allclose(centres, expected)


def test_object_relation_rows_sum_to_one_over_regions() -> None:
    torch.manual_seed(0)
    relation = object_relation(torch.randn(2, 50, 16), torch.randn(2, 19, 16))
    assert relation.shape == (2, 50, 19)
    assert torch.allclose(relation.sum(dim=-1), torch.ones(2, 50))


def test_object_relation_prefers_the_most_similar_region() -> None:
    key = torch.eye(4).unsqueeze(0) * 10  # (1, K=4, D=4)
    query = torch.tensor([[[0.0, 0.0, 10.0, 0.0]]])  # (1, P=1, D=4)
    assert object_relation(query, key).argmax(dim=-1).item() == 2


def test_presets_share_hrnet_names_and_paper_widths() -> None:
    assert OCRConfig.preset("w48") == OCRConfig(mid_channels=512, key_channels=256, dropout=0.05)
    assert OCRConfig.preset("w18s").mid_channels == 512
    assert OCRConfig.preset("tiny") == OCRConfig(mid_channels=32, key_channels=16)


def test_unknown_preset_error_lists_valid_names() -> None:
    with pytest.raises(ValueError, match="'huge'.*tiny, w18s, w48"):
        OCRConfig.preset("huge")

