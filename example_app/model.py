"""A tiny model class for the example: pickled by reference, so it loads on any supported Python."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class LinearModel:
    """``y = bias + sum(w_i * x_i)``: small enough to read, real enough to serve."""

    weights: tuple[float, ...]
    bias: float = 0.0

    def predict(self, rows: Sequence[Sequence[float]]) -> list[float]:
        """One prediction per row of features; a row of the wrong length is a ValueError."""
        predictions = []
        for row in rows:
            if len(row) != len(self.weights):
                raise ValueError(f"expected {len(self.weights)} features per row, got {len(row)}")
            predictions.append(self.bias + sum(w * float(x) for w, x in zip(self.weights, row, strict=True)))
        return predictions
