"""Text classifiers: the OE paper's 2-layer GRU over word embeddings."""

from __future__ import annotations

from typing import Annotated

from annotated_types import Ge, Le, Lt

import oebench.api as oebench

#: a layer size: at least 1, at most 16384 (beyond that, a typo)
Size = Annotated[int, Ge(1), Le(16384)]


def gru(
    num_classes: int,
    shape: tuple,
    embed_dim: Size = 50,
    hidden: Size = 128,
    layers: Annotated[int, Ge(1), Le(64)] = 2,
    dropout: Annotated[float, Ge(0), Lt(1)] = 0.0,
):
    """Embedding (``shape[1]`` ids, ``<pad>`` = 0) -> GRU -> last layer's final hidden state
    (the features) -> linear head ``fc``. The OE reference: 50-d embeddings, 2 x 128 GRU."""
    from torch import nn

    if len(shape) != 3 or not isinstance(shape[2], str):
        raise ValueError(
            f"gru needs a text input spec (length, vocabulary size, digest), got {shape}"
        )

    class GRUClassifier(nn.Module):
        def __init__(self):
            super().__init__()
            self.embedding = nn.Embedding(int(shape[1]), embed_dim, padding_idx=0)
            self.gru = nn.GRU(
                embed_dim, hidden, num_layers=layers, batch_first=True, dropout=dropout
            )
            self.drop = nn.Dropout(dropout)
            self.fc = nn.Linear(hidden, num_classes)

        def forward_features(self, x):
            return self.gru(self.embedding(x))[1][-1]

        def forward_head(self, features):
            return self.fc(self.drop(features))

        def forward(self, x):
            return self.forward_head(self.forward_features(x))

    return GRUClassifier()


@oebench.hookimpl
def register_models(register):
    register(
        "gru",
        gru,
        description="2-layer GRU text classifier, 50-d embeddings, 128 units (OE paper, NLP)",
        modalities=["text"],
    )
