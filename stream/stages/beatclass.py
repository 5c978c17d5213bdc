"""Beat classification stage: each beat's windows and model scores joined, featurised and classified.

For every ``beat_720`` window the ``cae`` scored, the stage finds the same beat's ``beat_400`` cycle (same
``stream_id`` and :attr:`Window.beat_time`) and its ``beat_vae`` score, computes the beat's features with the
stream's own :class:`~models.preprocessing.beatfeatures.BeatFeaturizer` (per-stream RR averages and
dominant-beat template) and classifies all beats of the call in one ONNX Runtime call
(:class:`~models.runtime.beat_class.BeatClassifier`). The training task runs exactly this code (with no
classifier) to build its features, so training and serving see the same features.

No torch here.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from models.card import BEAT_400, BEAT_720
from models.preprocessing.beatfeatures import BeatFeaturizer, featurize
from models.runtime.beat_class import BeatClassifier
from models.runtime.protocol import ModelScore, Window
from stream.stages.events import BEAT_CLASSES, ClassifiedBeat

#: The scoring models whose scores the features use, and the windows they score.
CAE_MODEL = "cae"
VAE_MODEL = "beat_vae"


def _key(stream_id: str, kind: str, t: float) -> tuple[str, str, float]:
    return (stream_id, kind, round(float(t), 6))


class BeatClassStage:
    """Joins each beat's windows and scores (by stream_id and Window.beat_time) and classifies the beat."""

    def __init__(self, classifier: BeatClassifier | None) -> None:
        self.classifier = classifier
        self._featurizers: dict[str, BeatFeaturizer] = {}

    @classmethod
    def load(cls, models_dir: str | Path | None = None) -> BeatClassStage | None:
        """The stage with the ``beat_class`` model of ``models_dir``; None when it has no such card."""
        from models.card import card_path
        from models.runtime.registry import artifacts_dir

        root = artifacts_dir(models_dir)
        if not card_path(root, "beat_class").is_file():
            return None
        return cls(BeatClassifier.load(models_dir=root))

    def forget(self, stream_id: str) -> None:
        """Drop a stream's featurizer state (the stream ended or restarted)."""
        self._featurizers.pop(stream_id, None)

    @property
    def streams(self) -> int:
        return len(self._featurizers)

    def features(
        self, windows: Sequence[Window], scores: Sequence[ModelScore]
    ) -> list[tuple[Window, np.ndarray, float]]:
        """``(beat_720 window, features, sqi)`` of every beat_720 window scored by the CAE, in order."""
        cae: dict[tuple[str, str, float], ModelScore] = {}
        vae: dict[tuple[str, str, float], ModelScore] = {}
        for s in scores:
            if s.model == CAE_MODEL and s.window == BEAT_720.name:
                cae[_key(s.stream_id, s.window, s.time)] = s
            elif s.model == VAE_MODEL and s.window == BEAT_400.name:
                vae[_key(s.stream_id, s.window, s.time)] = s
        if not cae:
            return []
        cycles: dict[tuple[str, float], Window] = {}
        beats: list[tuple[Window, ModelScore]] = []
        for w in windows:
            if w.kind == BEAT_720.name:
                sc = cae.get(_key(w.stream_id, w.kind, w.start))
                if sc is not None:
                    beats.append((w, sc))
            elif w.kind == BEAT_400.name and w.beat_time is not None:
                cycles[(w.stream_id, round(w.beat_time, 6))] = w
        if not beats:
            return []
        feats: list[BeatFeaturizer] = []
        vae_scores: list[float | None] = []
        embs: list[list[float] | None] = []
        for w, _ in beats:
            f = self._featurizers.get(w.stream_id)
            if f is None:
                f = self._featurizers[w.stream_id] = BeatFeaturizer()
            feats.append(f)
            cyc = (
                cycles.get((w.stream_id, round(w.beat_time, 6)))
                if w.beat_time is not None
                else None
            )
            vs = vae.get(_key(cyc.stream_id, cyc.kind, cyc.start)) if cyc is not None else None
            vae_scores.append(None if vs is None else vs.score)
            embs.append(None if vs is None else vs.embedding)
        x, q = featurize(
            feats,
            np.stack([w.data for w, _ in beats]),
            [w.rr for w, _ in beats],
            [s.score for _, s in beats],
            vae_scores,
            embs,
            [s.recovered_by is not None for _, s in beats],
        )
        return [(w, x[i], float(q[i])) for i, (w, _) in enumerate(beats)]

    def classify(
        self, windows: Sequence[Window], scores: Sequence[ModelScore]
    ) -> list[ClassifiedBeat]:
        """One :class:`ClassifiedBeat` per beat_720 window scored by the CAE (features only, and an empty
        list, without a classifier)."""
        rows = self.features(windows, scores)
        if not rows or self.classifier is None:
            return []
        x = np.empty((len(rows), rows[0][1].shape[0]), dtype=np.float32)
        for i, r in enumerate(rows):
            x[i] = r[1]
        labels, probs = self.classifier.classify(x)
        # rounded at once: a float32 * 1e4 is exact in float64, so these equal round(float(v), 4)
        rounded = np.round(np.asarray(probs, dtype=np.float64), 4).tolist()
        sqis = np.round(np.array([q for _, _, q in rows], dtype=np.float64), 4).tolist()
        out = []
        for (w, _, _), lab, p, q in zip(rows, labels.tolist(), rounded, sqis, strict=True):
            out.append(
                ClassifiedBeat(
                    stream_id=w.stream_id,
                    time=float(w.beat_time if w.beat_time is not None else w.start),
                    label=lab,
                    confidence=p[BEAT_CLASSES.index(lab)],
                    rr_s=None if w.rr is None else w.rr.pre_s,
                    probs=tuple(p),
                    sqi=q,
                )
            )
        return out
