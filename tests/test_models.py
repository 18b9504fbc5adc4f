"""The CIFAR-10 models: parameter counts against the papers' shapes, both memory layouts, GroupNorm's
independence from the batch, ResNet's parameter-free shortcut."""

import pytest
import torch
from torch import nn

from fedlearn.models import BasicBlock, build_model, count_parameters


def conv(c_in, c_out, k, bias=True):
    return c_in * c_out * k * k + (c_out if bias else 0)


def test_cnn_cifar_has_niid_benchs_shape():
    # conv 3->6 5x5, conv 6->16 5x5, FC 16*5*5 -> 120 -> 84 -> 10 (Li et al. 2022, SimpleCNN)
    expected = conv(3, 6, 5) + conv(6, 16, 5) + (400 * 120 + 120) + (120 * 84 + 84) + (84 * 10 + 10)
    assert expected == 62_006
    assert count_parameters(build_model("cnn-cifar")) == expected


def test_resnet20_has_he_et_als_shape():
    # conv 3->16; 3 stages x 3 blocks x 2 convs 3x3 (16, 32, 64 channels); a norm (scale, shift) after each conv;
    # option-A shortcuts have no weights; FC 64 -> 10
    convs = conv(3, 16, 3, bias=False)
    norms = 2 * 16
    c_in = 16
    for width in (16, 32, 64):
        for _ in range(3):
            convs += conv(c_in, width, 3, bias=False) + conv(width, width, 3, bias=False)
            norms += 2 * 2 * width
            c_in = width
    expected = convs + norms + 64 * 10 + 10
    assert expected == 269_722  # the 0.27M of He et al.'s Table 6
    model = build_model("resnet20")
    assert count_parameters(model) == expected
    assert sum(isinstance(m, BasicBlock) for m in model.modules()) == 9
    assert not any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules())
    assert list(model.buffers()) == []  # no running statistics to average across clients


@pytest.mark.parametrize("name", ["cnn-cifar", "resnet20"])
def test_forward_and_backward_agree_in_both_layouts(name):
    x, y = torch.randn(8, 3, 32, 32), torch.arange(8)
    results = []
    for channels_last in (False, True):
        torch.manual_seed(0)
        model = build_model(name, channels_last=channels_last)
        inputs = x.contiguous(memory_format=torch.channels_last) if channels_last else x
        loss = nn.functional.cross_entropy(model(inputs), y)
        loss.backward()
        grads = torch.cat([p.grad.flatten() for p in model.parameters()])
        assert torch.isfinite(loss) and torch.isfinite(grads).all() and grads.abs().sum() > 0
        results.append((loss.detach(), grads))
    assert torch.allclose(results[0][0], results[1][0], atol=1e-5)
    assert torch.allclose(results[0][1], results[1][1], atol=1e-4)


def test_groupnorm_resnet20_does_not_mix_samples():
    torch.manual_seed(0)
    model = build_model("resnet20")
    x = torch.randn(6, 3, 32, 32)
    batch = model(x)
    alone = torch.cat([model(x[i : i + 1]) for i in range(6)])
    shuffled = model(x[[5, 3, 1, 0, 2, 4]])[[3, 2, 4, 1, 5, 0]]
    other_company = model(torch.cat([x[:2], 100 * torch.randn(4, 3, 32, 32)]))[:2]
    assert torch.allclose(batch, alone, atol=1e-5) and torch.allclose(batch, shuffled, atol=1e-5)
    assert torch.allclose(batch[:2], other_company, atol=1e-5)


def test_the_shortcut_subsamples_and_pads_new_channels_with_zeros():
    block = BasicBlock(16, 32, stride=2)
    with torch.no_grad():
        for p in block.parameters():
            p.zero_()  # the residual branch gives 0: only the shortcut is left
    x = torch.randn(2, 16, 8, 8)
    out = block(x)
    assert out.shape == (2, 32, 4, 4)
    assert torch.equal(out[:, 8:24], torch.relu(x[:, :, ::2, ::2]))
    assert torch.equal(out[:, :8], torch.zeros(2, 8, 4, 4)) and torch.equal(out[:, 24:], torch.zeros(2, 8, 4, 4))
