"""Training a derived architecture from scratch on (fake) Fashion-MNIST."""

from __future__ import annotations

import random
from pathlib import Path

import pytest
from conftest import write_fake_fashion_mnist

from hwnas.space import load_space
from hwnas.train import at_resolution, train_arch


@pytest.mark.parametrize("space", ["tiny", "tiny_darts", "proxyless"])
def test_train_arch_learns_and_reports(space: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HWNAS_DATA", str(tmp_path / "cache"))
    data = write_fake_fashion_mnist(tmp_path / "fm", n_train=96, n_test=32)
    sp = load_space(space).with_params(in_channels=1, num_classes=10)
    if space == "proxyless":
        sp = sp.with_params(width_mult=0.25)
    arch = sp.sample(random.Random(0))
    res = train_arch(arch, epochs=2, batch_size=16, data_dir=data, seed=0)
    assert 0.0 <= res.test_acc <= 1.0 and res.train_loss > 0 and res.params > 0
    again = train_arch(arch, epochs=2, batch_size=16, data_dir=data, seed=0)
    assert again == res  # seeded: the same numbers on the CPU


def test_at_resolution_keeps_the_layers() -> None:
    arch = load_space("proxyless").sample(random.Random(0))
    small = at_resolution(arch, 1, 28)
    assert small.body == arch.body and small.input == (1, 28, 28)
    assert [n.call.op for n in small.plan.nodes] == [n.call.op for n in arch.plan.nodes]
