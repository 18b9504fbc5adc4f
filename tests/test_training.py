import torch
import torch.nn.functional as F
from torch import nn

from fedlearn.core.training import Passes, count_batches, evaluate, make_optimizer, train
from fedlearn.data import load_dataset
from fedlearn.models import MODELS, build_model


def test_training_lowers_the_loss_on_a_small_made_up_dataset(tiny_data_dir):
    data = load_dataset("mnist", tiny_data_dir)
    torch.manual_seed(0)
    model = build_model("cnn")
    before = evaluate(model, data.train_x, data.train_y)
    indices = torch.arange(data.train_y.numel())
    stats = train(
        model,
        make_optimizer("adam", model.parameters(), 1e-3),
        data.train_x,
        data.train_y,
        Passes(indices, epochs=3, batch_size=32, generator=torch.Generator().manual_seed(0)),
    )
    after = evaluate(model, data.train_x, data.train_y)
    assert stats.samples == 3 * 400 and stats.batches == count_batches(400, 32, 3) == 39
    assert after.loss < 0.5 * before.loss
    assert after.accuracy > before.accuracy + 0.3


class FixedLogits(nn.Module):
    """Returns a stored logit row per sample, looked up by the sample's first pixel."""

    def __init__(self, logits: torch.Tensor):
        super().__init__()
        self.logits = logits

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.logits[x[:, 0, 0, 0].long()]


def test_evaluate_is_correct_over_samples_with_a_short_last_batch():
    logits = torch.randn(7, 10, generator=torch.Generator().manual_seed(0))
    x = torch.arange(7, dtype=torch.float32).view(7, 1, 1, 1)
    y = logits.argmax(dim=1).clone()
    y[[1, 4, 5, 6]] = (y[[1, 4, 5, 6]] + 1) % 10  # 3 of 7 right
    result = evaluate(FixedLogits(logits), x, y, batch_size=3)
    assert result.accuracy == 3 / 7
    assert abs(result.loss - F.cross_entropy(logits, y).item()) < 1e-6


def test_every_greyscale_model_trains_one_step_on_mnist_shaped_input():
    x, y = torch.randn(4, 1, 28, 28), torch.tensor([0, 1, 2, 3])
    for name in [n for n in MODELS if MODELS[n].info.input_shape == (1, 28, 28)]:
        model = build_model(name)
        stats = train(
            model,
            make_optimizer("sgd", model.parameters(), 0.1),
            x,
            y,
            Passes(torch.arange(4), 1, 4, torch.Generator().manual_seed(0)),
        )
        assert stats.batches == 1 and torch.isfinite(torch.tensor(stats.mean_loss))


def local_distance_from_anchor(tiny_data_dir, proximal_mu):
    """Train a model for 2 epochs from a fixed start; returns (final weights, distance from the start)."""
    from fedlearn.client.objectives import Proximal
    from fedlearn.core.flat import get_flat, unflatten_like

    data = load_dataset("mnist", tiny_data_dir)
    torch.manual_seed(0)
    model = build_model("mlp")
    start = get_flat(model)
    proximal = None if proximal_mu is None else Proximal(proximal_mu, unflatten_like(model, start))
    train(
        model,
        make_optimizer("sgd", model.parameters(), 0.05),
        data.train_x,
        data.train_y,
        Passes(torch.arange(400), epochs=2, batch_size=20, generator=torch.Generator().manual_seed(0)),
        hooks=proximal,
    )
    weights = get_flat(model)
    return weights, float((weights - start).norm())


def test_fedprox_with_mu_0_equals_plain_training(tiny_data_dir):
    plain, _ = local_distance_from_anchor(tiny_data_dir, None)
    prox0, _ = local_distance_from_anchor(tiny_data_dir, 0.0)
    assert torch.equal(plain, prox0)


def test_fedprox_pulls_local_weights_toward_the_global_model(tiny_data_dir):
    distances = [local_distance_from_anchor(tiny_data_dir, mu)[1] for mu in (0.0, 1.0, 10.0)]
    assert distances[0] > distances[1] > distances[2] > 0


def test_channels_last_is_the_same_computation_in_another_layout(tiny_data_dir):
    from fedlearn.core.flat import get_flat

    data = load_dataset("mnist", tiny_data_dir)
    weights = []
    for channels_last in (False, True):
        d = data.to(torch.device("cpu"), channels_last)
        torch.manual_seed(0)
        model = build_model("cnn", channels_last=channels_last)
        assert model[3].weight.is_contiguous(memory_format=torch.channels_last) == channels_last  # 16 in-channels
        train(
            model,
            make_optimizer("adam", model.parameters(), 1e-3),
            d.train_x,
            d.train_y,
            Passes(torch.arange(400), epochs=1, batch_size=50, generator=torch.Generator().manual_seed(0)),
        )
        weights.append(get_flat(model))
    assert torch.allclose(weights[0], weights[1], atol=1e-4)
    assert weights[0].shape == weights[1].shape  # flat vectors use the logical order in both layouts
