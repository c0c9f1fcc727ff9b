"""What a model costs, measured in one place: on meta, equal to the built model's own figures, and free of
side effects on training (no random numbers drawn)."""

import pytest
import torch

from stt.model.measure import count_parameters, forward_gflops_per_second, measure
from stt.model.network import build_model
from stt.train.run_config import load_run_config


def test_measure_on_meta_equals_the_built_models_own_count_and_draws_no_random_numbers():
    run = load_run_config("small.yaml")
    before = torch.get_rng_state()
    size = measure(run, 80, 29)
    assert torch.equal(torch.get_rng_state(), before)  # a trainer that measures itself trains as before
    model = build_model(run, 80, 29)
    assert size.params == count_parameters(model) == 2_575_869
    assert size.gflops_per_second == pytest.approx(forward_gflops_per_second(model))
    assert measure(run, 80, None).params == size.params - (192 + 1) * 29  # the output projection counts
