"""Fixtures of the candidate tests: dense models with a candidate cut from each by our surgery."""

from __future__ import annotations

import pytest
import torch
from candidate_nets import PrunedCase, ResidualNet, make_case

from pytest_prune.models import build_model


@pytest.fixture(scope="session")
def residual_case(tmp_path_factory: pytest.TempPathFactory) -> PrunedCase:
    torch.manual_seed(0)
    example = torch.randn(2, 3, 8, 8, generator=torch.Generator().manual_seed(1))
    return make_case(ResidualNet(), example, tmp_path_factory.mktemp("residual"), seed=1)


@pytest.fixture(scope="session")
def resnet20_case(tmp_path_factory: pytest.TempPathFactory) -> PrunedCase:
    info = build_model("cifar-resnet20")
    return make_case(info.model, info.example_input(), tmp_path_factory.mktemp("resnet20"), seed=2)


@pytest.fixture(scope="session")
def exported_path(residual_case: PrunedCase, tmp_path_factory: pytest.TempPathFactory):
    """The residual candidate as a torch.export program, saved with torch.export.save."""
    program = torch.export.export(residual_case.pruned, (residual_case.example,))
    path = tmp_path_factory.mktemp("exported") / "exported.pt2"
    torch.export.save(program, path)
    return path
