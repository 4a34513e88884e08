"""The process group as a single process sees it: a group of one, where every collective
is a no-op and the training helpers hand back the plain thing (the 2-process behaviour
is tests/test_distributed.py's)."""

from __future__ import annotations

import torch
from torch import nn

from headstart.parallel import (
    World,
    any_across,
    broadcast,
    gather_to_all,
    launched_by_torchrun,
    sum_across,
    world,
)
from headstart.train.distributed import (
    StepLoss,
    shard_batches,
    shard_dataset,
    step_loss,
    wrap_model,
)

ONE = World(0, 1, 0)


def test_without_torchrun_this_process_is_a_world_of_one(monkeypatch) -> None:
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    assert not launched_by_torchrun()
    assert world() == ONE and world().is_main
    values = torch.tensor([1.5, 2.0], dtype=torch.float64)
    assert sum_across(values) is values
    assert broadcast({"a": 1}) == {"a": 1}
    assert gather_to_all(7) == [7]
    assert any_across(True) is True and any_across(False) is False


def test_a_group_of_one_trains_the_model_itself_on_every_image() -> None:
    model = nn.Linear(3, 2)
    assert wrap_model(model, torch.device("cpu"), ONE) is model
    dataset = list(range(5))
    assert shard_dataset(dataset, ONE) is dataset
    batches = [[4, 0, 2], [1, 3]]
    assert shard_batches(batches, ONE) == (batches, [False, False])


def test_a_group_of_one_steps_on_the_criterions_own_mean() -> None:
    weights = torch.tensor([1.0, 3.0])
    loss = step_loss(weights, 0.1, ONE)
    assert type(loss) is StepLoss
    logits = torch.tensor([[2.0, 0.5], [0.1, 0.9], [1.0, -1.0]], requires_grad=True)
    targets = torch.tensor([0, 1, 1])
    expected = nn.functional.cross_entropy(logits, targets, weight=weights, label_smoothing=0.1)
    value, totals = loss.reduce(
        loss.losses(logits, targets), targets, logits, False, True, lambda x: x
    )
    assert torch.equal(value, expected) and value.requires_grad
    assert totals.mean_loss == expected.item()
    assert totals.loss_sum == expected.item() * 3
    assert (totals.correct, totals.seen, totals.interrupted) == (2, 3, True)
    # A hook's stand-in loss is the loss stepped on and the value reported.
    doubled, totals = loss.reduce(expected, targets, logits, False, False, lambda x: x * 2)
    assert totals.mean_loss == doubled.item() == (expected * 2).item()
