"""ONNX Runtime wrapper of ``beat_class`` (no torch): AAMI class (N, S, V, F, Q) of beat feature vectors.

Input: ``features`` ``[k, F]`` from :func:`models.preprocessing.beatfeatures.featurize` (F and the order of
the features are the card's ``feature_names``; the graph standardises them itself). Output: ``probs``
``[k, 5]`` in the card's ``classes`` order. Decision: ``argmax(probs * class_weights)`` with the card's
``decision.class_weights`` (chosen by patient-wise cross-validation on MIT-BIH DS1).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from models.errors import ModelError
from models.preprocessing.beatfeatures import FEATURE_NAMES
from models.runtime.base import OnnxModel
from models.runtime.registry import register


@register("beat_class")
class BeatClassifier(OnnxModel):
    """``beat_class.onnx`` + card: ``classify(features) -> (labels, probs)``."""

    default_name = "beat_class"

    def __init__(
        self, onnx_path: str | Path, card_path: str | Path | None = None, threads: int = 1
    ) -> None:
        super().__init__(onnx_path, card_path, threads)
        names = self.card.get("feature_names")
        if not isinstance(names, list) or not names:
            raise ModelError(f"{self.name}: card has no feature_names")
        self.feature_names = tuple(str(n) for n in names)
        if self.feature_names != FEATURE_NAMES:
            raise ModelError(
                f"{self.name}: card's {len(self.feature_names)} feature_names differ from this code's "
                f"{len(FEATURE_NAMES)} (models.preprocessing.beatfeatures); re-export the model"
            )
        self.classes = tuple(str(c) for c in self.card.get("classes", ()))
        if len(self.classes) < 2:
            raise ModelError(f"{self.name}: card has no classes")
        decision = self.card.get("decision") or {}
        w = decision.get("class_weights") or [1.0] * len(self.classes)
        self.class_weights = np.asarray(w, dtype=np.float32)
        if self.class_weights.shape != (len(self.classes),):
            raise ModelError(f"{self.name}: decision.class_weights must have one weight per class")
        self.input_name = self.input_names[0]

    @property
    def n_features(self) -> int:
        return len(self.feature_names)

    def predict_proba(self, features: np.ndarray, batch: int = 4096) -> np.ndarray:
        """Class probabilities ``[k, n_classes]`` of feature rows ``[k, F]``."""
        x = np.asarray(features, dtype=np.float32)
        if x.ndim == 1:
            x = x[None]
        if x.ndim != 2 or x.shape[1] != self.n_features:
            raise ModelError(
                f"{self.name}: features must be [k, {self.n_features}] (card feature_names), got {x.shape}"
            )
        return np.concatenate(
            [
                self.run({self.input_name: x[s : s + batch]}, ["probs"])["probs"]
                for s in range(0, len(x), batch)
            ]
        )

    def decide(self, probs: np.ndarray) -> np.ndarray:
        """Class labels by the card's rule ``argmax(probs * class_weights)``."""
        idx = np.argmax(np.asarray(probs) * self.class_weights, axis=1)
        return np.asarray(self.classes, dtype=object)[idx].astype(str)

    def classify(self, features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``(labels [k] of str, probs [k, 5])`` of feature rows ``[k, F]``."""
        probs = self.predict_proba(features)
        return self.decide(probs), probs
