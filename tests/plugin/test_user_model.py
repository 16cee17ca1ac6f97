"""A user's own model and data, as a new user gives them: a bare ``nn.Module`` factory, an ``(x, y)``
data callable, a plain state dict outside the project given with ``--prune-weights PATH``."""

import textwrap

import pytest
import torch

from pytest_prune.pipeline.methods import known_methods

PACKAGE = """
    import torch
    from torch import nn

    def build():
        return nn.Sequential(
            nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
            nn.Conv2d(8, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(),
            nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, 10),
        )

    def data():
        g = torch.Generator().manual_seed(0)
        x = torch.randn(96, 3, 32, 32, generator=g)
        return x, torch.randint(0, 10, (96,), generator=g)

    def wrong_data():
        return torch.randn(8, 1, 28, 28), torch.zeros(8, dtype=torch.long)
"""


@pytest.fixture
def user_project(pytester, monkeypatch):
    """``proj/`` (with an ini file and the package ``mypkg``), weights in ``models/`` outside it."""
    project = pytester.mkdir("proj")
    (project / "pytest.ini").write_text("[pytest]\n")
    (project / "mypkg").mkdir()
    (project / "mypkg" / "__init__.py").write_text("")
    (project / "mypkg" / "net.py").write_text(textwrap.dedent(PACKAGE))
    monkeypatch.chdir(project)
    monkeypatch.syspath_prepend(str(project))
    import importlib

    net = importlib.import_module("mypkg.net")
    torch.manual_seed(0)
    weights = pytester.mkdir("models") / "w.pth"
    torch.save(net.build().state_dict(), weights)
    yield project, weights
    import sys

    for name in ("mypkg", "mypkg.net"):
        sys.modules.pop(name, None)


def test_bare_factory_every_method_baselines_in_the_project_then_pass(pytester, user_project):
    project, weights = user_project
    args = ["--prune-model=mypkg.net:build", "--prune-data=mypkg.net:data", "--prune-weights", str(weights),
            f"--prune-criteria={','.join(known_methods())}", "--prune-ratios=0.5", "-p", "no:randomly"]
    written = pytester.runpytest(*args, "--prune-update-baselines")
    outcomes = written.parseoutcomes()
    assert outcomes.get("failed", 0) == 0 and outcomes["passed"] >= 6 * len(known_methods()) - 10, written.stdout.str()[-3000:]
    folder = project / "baselines" / "mypkg.net.build"
    assert len(list(folder.glob("*.json"))) == len(known_methods())
    again = pytester.runpytest(*args)
    assert again.parseoutcomes() == {"passed": outcomes["passed"]}, again.stdout.str()[-3000:]


def test_input_shape_comes_from_the_data(pytester, user_project):
    result = pytester.runpytest("--prune-model=mypkg.net:build", "--prune-data=mypkg.net:data",
                                "--prune-criteria=l1", "--prune-ratios=0.5", "--collect-only", "-q")
    out = result.stdout.str()
    assert "mypkg.net.build::l1-0.5::colour_selectivity" in out  # 3-channel input, from the data
    assert result.ret == 0


def test_prune_name_chooses_the_folder(pytester, user_project):
    project, _ = user_project
    result = pytester.runpytest("--prune-model=mypkg.net:build", "--prune-data=mypkg.net:data",
                                "--prune-name=tiny-cnn", "--prune-criteria=l1", "--prune-ratios=0.5",
                                "--prune-update-baselines")
    assert result.parseoutcomes().get("failed", 0) == 0
    assert (project / "baselines" / "tiny-cnn" / "l1-0.5.json").is_file()


@pytest.mark.parametrize("data, says", [
    ("mypkg.net:wrong_data", "fails on a batch of 'mypkg.net:wrong_data' samples (1x28x28)"),
    ("mypkg.net:nothing_here", "mypkg.net"),
])
def test_a_bad_data_spec_fails_once_at_collection(pytester, user_project, data, says):
    result = pytester.runpytest("--prune-model=mypkg.net:build", f"--prune-data={data}",
                                "--prune-criteria=l1,random", "--prune-ratios=0.3,0.5")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    err = result.stderr.str()
    assert says in err and err.count("pytest-prune:") == 1


SMALL_DATA = """
    import torch

    def data():
        g = torch.Generator().manual_seed(0)
        return torch.randn(32, 3, 32, 32, generator=g), torch.randint(0, 10, (32,), generator=g)
"""


@pytest.mark.parametrize("family", ["regnet_x_400mf", "shufflenet_v2_x0_5"])
def test_torchvision_families_gate_on_a_users_small_images(pytester, family):
    """Grouped convolutions (RegNet) and channel split + shuffle (ShuffleNetV2) through the plugin:
    the input size comes from the user's 32x32 data, baselines are written, then pass. In a
    subprocess: torchvision cannot be imported twice in one process."""
    pytester.makepyfile(smalldata=textwrap.dedent(SMALL_DATA))
    args = [f"--prune-model=torchvision:{family}", "--prune-data=smalldata:data",
            "--prune-criteria=l1", "--prune-ratios=0.3", "-p", "no:randomly",
            "-k", "top1 or reduction or equivalence"]  # the checks of the surgery; lazy, so quick
    written = pytester.runpytest_subprocess(*args, "--prune-update-baselines")
    written.assert_outcomes(passed=5, deselected=3)
    again = pytester.runpytest_subprocess(*args)
    again.assert_outcomes(passed=5, deselected=3)
    assert (pytester.path / "baselines" / f"torchvision-{family}" / "l1-0.3.json").is_file()
    if family.startswith("shufflenet"):
        again.stdout.fnmatch_lines(["*channel shuffle*are kept*"])


SIAMESE = """
    import torch
    from torch import nn

    class Siamese(nn.Module):
        # one branch run on both halves of the stem (shared weights), a decoder's transposed conv,
        # one residual block run twice
        def __init__(self):
            super().__init__()
            self.stem = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU())
            self.branch = nn.Sequential(nn.Conv2d(8, 12, 3, padding=1), nn.BatchNorm2d(12), nn.ReLU())
            self.mix = nn.Sequential(nn.Conv2d(24, 16, 1), nn.BatchNorm2d(16), nn.ReLU())
            self.up = nn.Sequential(nn.ConvTranspose2d(16, 16, 2, stride=2), nn.BatchNorm2d(16), nn.ReLU())
            self.blk = nn.Sequential(nn.Conv2d(16, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
                                     nn.Conv2d(8, 16, 1), nn.BatchNorm2d(16))
            self.head = nn.Linear(16, 10)

        def forward(self, x):
            a, b = self.stem(x).chunk(2, 1)
            h = self.up(self.mix(torch.cat([self.branch(a), self.branch(b)], 1)))
            h = (h + self.blk(h)).relu()
            return self.head((h + self.blk(h)).relu().mean((2, 3)))

    def build():
        torch.manual_seed(0)  # no weights file: the same random weights every run
        return Siamese()

    def data():
        g = torch.Generator().manual_seed(0)
        return torch.randn(32, 3, 16, 16, generator=g), torch.randint(0, 10, (32,), generator=g)
"""


def test_a_model_with_shared_weights_and_a_transposed_conv_gates_with_data_driven_criteria(pytester, monkeypatch):
    """Layers run twice and a transposed conv prune exactly through the plugin: the criteria that
    read feature maps (attribution, taylor) score every use, lsq refits what it can; baselines
    written, then pass."""
    pytester.makepyfile(siamese=textwrap.dedent(SIAMESE))
    monkeypatch.syspath_prepend(str(pytester.path))
    args = ["--prune-model=siamese:build", "--prune-data=siamese:data", "--prune-criteria=attribution,taylor",
            "--prune-ratios=0.5", "--prune-recovery=none,lsq", "-p", "no:randomly",
            "-k", "top1 or reduction or equivalence"]
    written = pytester.runpytest(*args, "--prune-update-baselines")
    written.assert_outcomes(passed=20, deselected=12)
    written.stdout.fnmatch_lines(["*'blk.0'*run more than once per forward pass*"])
    again = pytester.runpytest(*args)
    again.assert_outcomes(passed=20, deselected=12)
