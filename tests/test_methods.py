"""The method registry: the one list every consumer reads, and schedules that are pure functions of the epoch."""

from __future__ import annotations

import dataclasses
import typing

import pytest

from hashgnn.config import EvalConfig, ModelConfig, TrainConfig
from hashgnn.errors import ConfigError
from hashgnn.methods import METHOD_NAMES, METHODS, MODES, Schedule, get_method, names
from hashgnn.model.base import HashModel


def test_config_choices_are_the_registry() -> None:
    hints = typing.get_type_hints(ModelConfig)
    assert typing.get_args(hints["method"]) == METHOD_NAMES
    (mode,) = typing.get_args(typing.get_type_hints(EvalConfig)["modes"])  # list[Mode]
    assert typing.get_args(mode) == MODES
    with pytest.raises(ConfigError, match="unknown method 'nope'"):
        get_method("nope")


@pytest.mark.parametrize("name", METHOD_NAMES)
def test_every_method_names_a_model_class(name: str) -> None:
    m = METHODS[name]
    if m.fit is not None:  # fitted, not trained: a fit function instead of a network
        assert callable(m.fit_function()) and not m.hash_layer
    else:
        assert issubclass(m.model_class(), HashModel)
    known = {f.name for f in dataclasses.fields(ModelConfig)} | {f.name for f in dataclasses.fields(TrainConfig)}
    assert set(m.knobs) <= known
    assert m.serving_mode == ("hamming" if m.hashing else "continuous")


@pytest.mark.parametrize("name", METHOD_NAMES)
def test_schedule_is_a_pure_function_of_the_epoch(name: str) -> None:
    mc, tc = ModelConfig(method=name, beta_schedule="linear", beta_epochs=4), TrainConfig(epochs=8, pretrain_epochs=3)
    m = get_method(name)
    forward = [m.schedule(e, mc, tc) for e in range(8)]
    backward = [m.schedule(e, mc, tc) for e in reversed(range(8))][::-1]
    assert forward == backward and all(isinstance(s, Schedule) and s.epoch == e for e, s in enumerate(forward))
    assert all(0.0 <= s.beta <= 1.0 for s in forward)
    with pytest.raises(dataclasses.FrozenInstanceError):
        forward[0].beta = 0.5  # type: ignore[misc]


def test_roles_partition_the_methods() -> None:
    groups = [names(role=r) for r in ("method", "ablation", "baseline", "continuous", "improved")]
    assert sorted(sum(groups, ())) == sorted(METHOD_NAMES)
    assert set(names(hashing=True)) == set(METHOD_NAMES) - set(names(role="continuous"))


@pytest.mark.parametrize("name", [n for n in METHOD_NAMES if METHODS[n].fit is None])
def test_is_staged_is_a_change_of_phase_within_the_budget(name: str) -> None:
    # is_staged decides DDP's find_unused_parameters and phase() the patience rule: both must agree
    # with the schedule, epoch by epoch, and a budget that ends before stage 2 is not staged.
    method = get_method(name)
    model_cfg = ModelConfig(method=name)
    for epochs in (1, 4, 12):
        train_cfg = TrainConfig(epochs=epochs, pretrain_epochs=4)
        phases = [method.phase(e, model_cfg, train_cfg) for e in range(epochs)]
        states = [method.schedule(e, model_cfg, train_cfg) for e in range(epochs)]
        assert phases == [(s.stage, s.encoder_frozen) for s in states]
        assert method.is_staged(model_cfg, train_cfg) == (len(set(phases)) > 1)
    staged = method.is_staged(ModelConfig(method=name), TrainConfig(epochs=12, pretrain_epochs=4))
    assert staged == (name == "hashgnn_sp")
    assert not method.is_staged(ModelConfig(method=name), TrainConfig(epochs=4, pretrain_epochs=4))
