"""Small CPU-friendly networks."""

from __future__ import annotations

import oebench.api as oebench


def small_cnn(num_classes: int, shape: tuple[int, int, int], width: int = 16, dropout: float = 0.0):
    """Three conv-BN-ReLU blocks (width, 2x, 4x channels), global average pool, linear head."""
    from torch import nn

    class SmallCNN(nn.Module):
        def __init__(self):
            super().__init__()
            c = shape[0]
            layers = []
            for i, out in enumerate((width, 2 * width, 4 * width)):
                layers += [
                    nn.Conv2d(c, out, 3, padding=1, bias=False),
                    nn.BatchNorm2d(out),
                    nn.ReLU(inplace=True),
                ]
                if i < 2:
                    layers.append(nn.MaxPool2d(2))
                c = out
            self.body = nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten())
            self.drop = nn.Dropout(dropout)
            self.fc = nn.Linear(c, num_classes)

        def forward_features(self, x):
            return self.body(x)

        def forward_head(self, features):
            return self.fc(self.drop(features))

        def forward(self, x):
            return self.forward_head(self.forward_features(x))

    return SmallCNN()


@oebench.hookimpl
def register_models(register):
    register("small-cnn", small_cnn, description="3-block CNN with BatchNorm (fast on CPU)")
