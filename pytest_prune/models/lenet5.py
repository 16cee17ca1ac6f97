"""LeNet-5 (LeCun et al. 1998) as used by Gong et al. 2020: 32x32 grey input, two 5x5 convs."""

from __future__ import annotations

from torch import nn


class LeNet5(nn.Module):
    """conv(1→6, 5x5) → ReLU → maxpool → conv(6→16, 5x5) → ReLU → maxpool → 120 → 84 → classes.

    ReLU and max-pooling replace the original's tanh and sub-sampling, as in most modern
    re-implementations; the layer sizes are the paper's.
    """

    def __init__(self, num_classes: int = 10, in_channels: int = 1):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, 6, 5),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(6, 16, 5),
            nn.ReLU(),
            nn.MaxPool2d(2),
        )
        self.classifier = nn.Sequential(
            nn.Flatten(),
            nn.Linear(16 * 5 * 5, 120),
            nn.ReLU(),
            nn.Linear(120, 84),
            nn.ReLU(),
            nn.Linear(84, num_classes),
        )

    def forward(self, x):
        return self.classifier(self.features(x))
