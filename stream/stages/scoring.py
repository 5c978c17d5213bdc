"""Model scoring stage: the loaded model cards applied to the windows the processor cuts.

:class:`WindowScorer` is a loop over the scoring models named in ``models`` (any card in
``Settings.models_dir`` whose role is ``scorer``; :mod:`models.runtime.registry` builds each from its card).
Each model declares the window it takes (its card's ``WindowSpec``); the processor cuts exactly those
windows (:attr:`WindowScorer.window_specs`). Today's cards: ``cae`` (``beat_720``), ``beat_vae``
(``beat_400``) and the 12-lead ``cae12``, ``vae_bilstm``, ``vae_bilstm_mha`` (``leads_10s``).

Recovery before scoring (``recover=True``): a window with missing (NaN) samples (the processor masks
every dropout kind as NaN: lead-off, flatline, saturation, NaN, lost frames; ``StageConfig.mask_dropouts``)
goes to the recoverer declared for its window (``recoverers``, default ``lstm_ae`` for ``beat_720`` and ``lead_recon`` for
``leads_10s``); what it fills is scored with ``recovered_by``/``recovered_fraction`` set, what it cannot fill
is returned in ``skipped`` with its reason (``dropout`` or ``model_error: ...``), so nothing is lost silently.
All windows of one call are batched per model (one ONNX Runtime call each). No torch here.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from models.card import BEAT_720, LEADS_10S, WindowSpec
from models.errors import ModelError

if TYPE_CHECKING:
    from models.runtime.lead_recon import LeadReconModel
    from stream.stages.beatclass import BeatClassStage
from models.runtime.protocol import ModelScore, Recovered, Recoverer, Window, WindowModel
from stream.stages.events import REBUILD_WINDOW, ClassifiedBeat

#: The recovery models the stream loads by default (each used only for a window a scorer takes).
DEFAULT_RECOVERERS: tuple[str, ...] = ("lstm_ae", "lead_recon")


@dataclass
class ScoringResult:
    """Scores, windows not scored with their reason, windows recovered per recovery model, and seconds
    spent per model."""

    scores: list[ModelScore] = field(default_factory=list)
    skipped: list[tuple[Window, str]] = field(default_factory=list)
    recovered: dict[str, int] = field(default_factory=dict)
    model_seconds: dict[str, float] = field(default_factory=dict)
    #: the AAMI class of every beat whose beat window was scored (with the ``beat_class`` model loaded)
    classes: list[ClassifiedBeat] = field(default_factory=list)
    #: beats left unclassified because the classifier failed, and its error
    unclassified: int = 0
    classifier_error: str | None = None
    #: every window that was recovered, as ``(window with its NaN, what the recoverer made of it)``
    recovered_windows: list[tuple[Window, Recovered]] = field(default_factory=list)
    #: ``leads_rebuild`` windows (never scored) whose masked leads could not or should not be rebuilt,
    #: with the reason (a window also in ``recovered_windows`` had only some of its leads rebuilt)
    unrebuilt: list[tuple[Window, str]] = field(default_factory=list)


def scoring_models(models_dir: str | Path | None = None) -> list[str]:
    """Names of every scoring model whose card is in ``models_dir`` (what ``--models`` accepts)."""
    from models.runtime.registry import available

    return [c.name for c in available(models_dir, role="scorer")]


class WindowScorer:
    """Scores :class:`~models.runtime.protocol.Window` batches with the models named in ``models``."""

    def __init__(
        self,
        models: Sequence[str] = ("cae", "beat_vae", "cae12"),
        models_dir: str | Path | None = None,
        recover: bool = True,
        recoverers: Sequence[str] = DEFAULT_RECOVERERS,
        classify: bool = True,
        rebuild: bool = True,
    ) -> None:
        """``classify``: classify each beat (AAMI class) with the ``beat_class`` model when its card is in
        ``models_dir`` and a loaded model takes its beat window."""
        from models.runtime.registry import available, load_recoverer, load_scorer

        known = scoring_models(models_dir)
        unknown = [m for m in models if m not in known]
        if unknown:
            raise ModelError(f"unknown stream models {unknown}; known: {known}")
        self.models = tuple(models)
        self.scorers: list[WindowModel] = [load_scorer(m, models_dir) for m in self.models]
        specs: dict[str, WindowSpec] = {}
        for s in self.scorers:
            prev = specs.setdefault(s.window.name, s.window)
            if prev != s.window:
                raise ModelError(
                    f"{s.name} declares window {s.window.name!r} unlike another loaded model's"
                )
        self._specs = specs
        self.recoverers: dict[str, Recoverer] = {}
        if recover:
            cards = {c.name: c for c in available(models_dir, role="recoverer")}
            for name in recoverers:
                card = cards.get(name)
                if card is not None and specs.get(card.window.name) == card.window:
                    self.recoverers.setdefault(card.window.name, load_recoverer(name, models_dir))
        #: rebuilds masked leads of the processor's ``leads_rebuild`` windows (streams no leads window
        #: covers, e.g. MIT-BIH): lead_recon, when its card is in ``models_dir``
        self.rebuilder: LeadReconModel | None = None
        if recover and rebuild and any(c.name == "lead_recon" for c in available(models_dir)):
            from models.runtime.lead_recon import LeadReconModel

            loaded = self.recoverers.get(LEADS_10S.name)
            self.rebuilder = (
                loaded
                if isinstance(loaded, LeadReconModel)
                else LeadReconModel.load("lead_recon", models_dir)
            )
        self.classifier: BeatClassStage | None = None
        if classify:
            from stream.stages.beatclass import BeatClassStage

            stage = BeatClassStage.load(models_dir)
            if stage is not None and BEAT_720.name in specs:
                self.classifier = stage

    @property
    def window_specs(self) -> tuple[WindowSpec, ...]:
        """The windows the loaded models take (the processor cuts only these)."""
        return tuple(self._specs.values())

    def window_leads(self, kind: str) -> tuple[str, ...]:
        """Lead names of the columns of a ``leads`` window of ``kind`` (empty for beat windows)."""
        spec = self._specs.get(kind)
        return tuple(spec.leads or ()) if spec is not None else ()

    @property
    def window_kinds(self) -> frozenset[str]:
        """Names of the windows this scorer consumes."""
        return frozenset(self._specs)

    def score(self, windows: Iterable[Window]) -> ScoringResult:
        """Score every window a loaded model takes; NaN windows are recovered when they can be, the
        others go to ``skipped``."""
        res = ScoringResult()
        groups: dict[str, list[Window]] = {}
        filled: dict[int, tuple[str, float]] = {}  # id(recovered window) -> (recoverer, share)
        damaged: dict[str, list[Window]] = {}
        rebuild: list[Window] = []
        for w in windows:
            if w.kind == REBUILD_WINDOW:
                rebuild.append(w)
                continue
            if w.kind not in self._specs:
                continue
            if np.isfinite(w.data).all():
                groups.setdefault(w.kind, []).append(w)
            else:
                damaged.setdefault(w.kind, []).append(w)
        for kind, group in damaged.items():
            rec = self.recoverers.get(kind)
            if rec is None:
                res.skipped += [(w, "dropout") for w in group]
                continue
            t0 = time.perf_counter()
            ok, lost = rec.recover(group)
            res.skipped += lost
            originals = {(w.stream_id, w.start, w.lead, w.beat_time): w for w in group}
            res.recovered_windows += [
                (
                    originals.get(
                        (r.window.stream_id, r.window.start, r.window.lead, r.window.beat_time),
                        r.window,
                    ),
                    r,
                )
                for r in ok
            ]
            if ok:
                groups.setdefault(kind, []).extend(r.window for r in ok)
                filled.update((id(r.window), (r.by, r.fraction)) for r in ok)
                res.recovered[rec.name] = res.recovered.get(rec.name, 0) + len(ok)
            res.model_seconds[rec.name] = (
                res.model_seconds.get(rec.name, 0.0) + time.perf_counter() - t0
            )
        if rebuild:
            self._rebuild(rebuild, res)
        scored: list[Window] = []
        for model in self.scorers:
            items = groups.get(model.window.name)
            if not items:
                continue
            t0 = time.perf_counter()
            try:
                scores = model.score(items)
            except ModelError as exc:
                res.skipped += [(w, f"model_error: {exc}") for w in items]
                scores = []
            if scores:
                scored += items
            for w, s in zip(items if scores else (), scores, strict=True):  # one score per window
                by = filled.get(id(w))
                res.scores.append(
                    s
                    if by is None
                    else s.model_copy(update={"recovered_by": by[0], "recovered_fraction": by[1]})
                )
            res.model_seconds[model.name] = (
                res.model_seconds.get(model.name, 0.0) + time.perf_counter() - t0
            )
        if self.classifier is not None and res.scores:
            t0 = time.perf_counter()
            try:
                res.classes = self.classifier.classify(scored, res.scores)
            except ModelError as exc:  # the beats stay unclassified; counted, never fatal
                res.unclassified = sum(w.kind == BEAT_720.name for w in scored)
                res.classifier_error = str(exc)
            res.model_seconds["beat_class"] = time.perf_counter() - t0
        return res

    def _rebuild(self, windows: list[Window], res: ScoringResult) -> None:
        """Rebuild the masked leads of ``leads_rebuild`` windows from their complete leads (never scored:
        published as recovered runs), or record why not."""
        if self.rebuilder is None:
            res.unrebuilt += [
                (w, "unrecoverable: no lead reconstruction model loaded") for w in windows
            ]
            return
        t0 = time.perf_counter()
        for w in windows:
            leads = tuple((w.lead or "").split(","))
            try:
                r = self.rebuilder.rebuild_leads(
                    w.data, w.fs, leads, stream_id=w.stream_id, start=w.start
                )
            except ModelError as exc:
                res.unrebuilt.append((w, f"model_error: {exc}"))
                continue
            if r.recovered is not None:
                rec = replace(r.recovered, window=replace(r.recovered.window, lead=w.lead))
                res.recovered_windows.append((w, rec))
                if r.reason:  # some leads left missing: their runs say why (matched by identity)
                    res.unrebuilt.append((w, r.reason))
            else:
                res.unrebuilt.append((w, r.reason or "unrecoverable"))
        name = self.rebuilder.name
        res.model_seconds[name] = res.model_seconds.get(name, 0.0) + time.perf_counter() - t0

    def forget(self, stream_id: str) -> None:
        """Drop a stream's per-patient state (the classifier's running template and RR averages)."""
        if self.classifier is not None:
            self.classifier.forget(stream_id)
