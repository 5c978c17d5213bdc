"""Per-stream composition of the signal stages: filter -> QRS -> segmentation -> dropouts -> rules.

One :class:`StreamProcessor` per patient stream holds all the state (filter states, ring buffer, QRS
detector, dropout runs, rule episodes). The Faust agent feeds it validated :class:`Frame` s in sequence
order and publishes what :meth:`StreamProcessor.process` returns. Nothing here touches Kafka.

Time base: absolute sample ``i`` of the stream is at ``t0 + i / fs`` where ``t0`` is the start time of the
first frame; a sequence gap advances the sample index by the lost samples (NaN), so times stay aligned.
"""

from __future__ import annotations

import contextlib
import itertools
import statistics
import time
from collections import deque
from dataclasses import dataclass, field, replace

import numpy as np
from scipy import signal as sps

from models.card import BEAT_400, BEAT_720, LEADS_10S, WindowSpec
from models.preprocessing.filtering import CausalFilter
from models.preprocessing.rhythm import RRContext
from models.preprocessing.segmentation import resample
from models.runtime.protocol import MEASURED, MODEL, Recovered
from stream.errors import FrameValidationError
from stream.stages.buffering import SampleBuffer, SequenceTracker
from stream.stages.dropouts import DropoutConfig, DropoutDetector
from stream.stages.events import REBUILD_WINDOW, AlertEvent, Beat, DropoutSegment, ModelWindow
from stream.stages.frame import Frame
from stream.stages.leadtransfer import LeadTransfer
from stream.stages.qrs import QrsDetector
from stream.stages.rules import RuleConfig, RuleEngine
from stream.stages.sqi import LeadQuality, QualityConfig, SignalQuality
from stream.stages.vf import VfDecision, VfDetector

#: Dropout kinds whose end is a step the band-pass filter rings after (``StageConfig.dropout_settle_s``).
SETTLE_KINDS: frozenset[str] = frozenset({"lead_off", "saturation"})

#: Preferred leads for beat detection and single-lead model windows, in order.
QRS_LEAD_PREFERENCE: tuple[str, ...] = ("MLII", "II", "V5", "I")

#: Preferred second QRS lead for multi-lead fusion (a precordial lead sees the QRS from another angle
#: and picks up other artefacts than the limb leads), in order; else the first other lead.
FUSION_LEAD_PREFERENCE: tuple[str, ...] = ("V5", "V2", "V1", "II", "MLII", "V4", "V3", "V6", "I")


@dataclass(frozen=True)
class StageConfig:
    """Thresholds and switches of every stage of the stream processor."""

    rules: RuleConfig = field(default_factory=RuleConfig)
    dropouts: DropoutConfig = field(default_factory=DropoutConfig)
    #: the model windows to cut (the loaded models' cards declare them; the stream cuts nothing else)
    windows: tuple[WindowSpec, ...] = (BEAT_720, LEADS_10S, BEAT_400)
    buffer_seconds: float = 12.0
    hr_beats: int = 8  # heart rate = 60 / median of the last hr_beats RR intervals
    rr_history: int = 256  # RR intervals kept per stream for the beats' rhythm context
    post_rr_wait_s: float = 2.0  # a beat window waits this long for the next beat (its post-RR)
    # windows with missing samples are still cut (where their spec says ``damaged``), NaN kept, for the
    # scoring stage to recover (LSTM-AE gap filling, lead reconstruction) or to count as a dropout: beat
    # windows (resampled around their gaps when the stream runs at another rate), and leads windows with
    # at least one complete lead (a lead with any missing sample is all NaN in the window)
    emit_damaged_windows: bool = True
    # every sample the dropout detector classifies as a dropout of a lead (nan, saturation, lead_off,
    # flatline, missing_frames; a confirmed run back to its start) is NaN in that lead of the band-passed
    # buffer before any window is cut, so no model scores a faulty lead: its windows go to recovery or are
    # skipped as ``dropout``. Windows wait until the detector has settled every sample they hold (a run is
    # confirmed only after its kind's minimum duration); ``dropout_settle_s`` after each lead-off and
    # saturation run is masked too: the band-pass filter's response to the multi-mV step back to the ECG
    # (LUDB 1, a 3.5 mV lead-off: 0.66 mV at 0.5 s after its end, 0.54 mV at 1 s, 0.03 mV at 2 s)
    mask_dropouts: bool = True
    dropout_settle_s: float = 1.5
    #: run the VF/flutter detector on the QRS lead (decisions feed the alarm engine)
    detect_vf: bool = True
    #: streams sampled below this rate get no model windows (a QRS complex is not resolved; the models'
    #: cards take 100-500 Hz input): ``StreamProcessor.unsupported`` says so, the worker counts it
    min_model_fs: float = 100.0
    #: multi-lead streams that no leads window covers (MIT-BIH's two leads): every ``rebuild_window_s``
    #: of signal in which a lead is masked and another is complete is cut as a ``leads_rebuild`` window
    #: (all the stream's leads, at its own rate; ``ModelWindow.lead`` = the comma-joined lead names) for
    #: the scoring stage to rebuild the masked lead from the others or say why not; 0 turns it off
    rebuild_window_s: float = 10.0
    #: rebuild those windows with the stream's own patient-specific lead transfer
    #: (:mod:`stream.stages.leadtransfer`, learned online from its clean seconds) instead of sending them
    #: to the scoring stage's 12-lead network
    lead_transfer: bool = True
    #: per-lead signal quality (:mod:`stream.stages.sqi`), one entry per lead per second
    quality: QualityConfig = field(default_factory=QualityConfig)
    #: multi-lead fusion: detect QRS on a second lead too and take the beats, per second, from the
    #: candidate lead of better quality (bSQI first); the model windows stay on the primary lead
    fuse_leads: bool = True
    #: fusion hysteresis: the other lead's bSQI must beat the chosen one's by this to switch while both
    #: are usable; back to the primary once it has been usable for ``fuse_return_s`` seconds
    fuse_margin: float = 0.1
    fuse_return_s: float = 3.0
    #: the second candidate lead's detectors (QRS and bSQI) run only while needed: they are woken (replaying
    #: the last ``fuse_history_s`` of that lead) in the second the primary lead is unusable or its bSQI
    #: is below 1 - ``fuse_margin`` (only then can fusion switch), and sleep again once the primary has
    #: been followed and sure for ``fuse_sleep_s`` seconds. Asleep, that lead's quality has no bSQI
    fuse_history_s: float = 20.0
    fuse_sleep_s: float = 10.0


@dataclass
class _LeadCut:
    """A leads window being cut: its spec, lead indices, length and next end (stream samples)."""

    spec: WindowSpec
    idx: list[int]
    length: int
    next_end: int


@dataclass
class _PendingBeat:
    """A detected beat waiting for the samples after it (and the next beat) before its windows are cut."""

    sample: int
    pre_s: float | None
    history: tuple[float, ...]
    post_s: float | None = None


@dataclass
class ProcessorOutput:
    """Everything one frame produced."""

    beats: list[Beat] = field(default_factory=list)
    #: the lead each beat of ``beats`` was detected on (parallel list)
    beat_leads: list[str] = field(default_factory=list)
    dropouts: list[DropoutSegment] = field(default_factory=list)
    alerts: list[AlertEvent] = field(default_factory=list)
    windows: list[ModelWindow] = field(default_factory=list)
    #: VF/flutter decisions on the QRS lead, one per second of signal (:mod:`stream.stages.vf`)
    vf: list[VfDecision] = field(default_factory=list)
    #: signal quality per lead per completed second (:class:`~stream.stages.sqi.LeadQuality`)
    quality: list[LeadQuality] = field(default_factory=list)
    #: ``leads_rebuild`` windows rebuilt by the stream's lead transfer: (window with its NaN, what the
    #: transfer made of it or None, why samples were left missing)
    rebuilt: list[tuple[ModelWindow, Recovered | None, str | None]] = field(default_factory=list)
    samples: int = 0
    gap_frames: int = 0
    duplicate: bool = False
    heart_rate_bpm: float | None = None
    stage_seconds: dict[str, float] = field(default_factory=dict)

    def extend(self, other: ProcessorOutput) -> None:
        """Accumulate ``other``'s events and counts (beats, dropouts, alerts, windows, samples, gaps)."""
        self.beats += other.beats
        self.beat_leads += other.beat_leads
        self.dropouts += other.dropouts
        self.alerts += other.alerts
        self.windows += other.windows
        self.vf += other.vf
        self.quality += other.quality
        self.rebuilt += other.rebuilt
        self.samples += other.samples
        self.gap_frames += other.gap_frames


def pick_qrs_lead(leads: tuple[str, ...]) -> int:
    """Index of the lead used for beat detection: MLII, II, V5, I, else the first."""
    for name in QRS_LEAD_PREFERENCE:
        if name in leads:
            return leads.index(name)
    return 0


def pick_fusion_lead(leads: tuple[str, ...], primary: int) -> int | None:
    """Index of the second QRS candidate lead (see :data:`FUSION_LEAD_PREFERENCE`), None for one lead."""
    for name in FUSION_LEAD_PREFERENCE:
        if name in leads and leads.index(name) != primary:
            return leads.index(name)
    return next((i for i in range(len(leads)) if i != primary), None)


class StreamProcessor:
    """Stateful processing of one patient stream (see module docstring)."""

    def __init__(
        self, stream_id: str, fs: float, leads: tuple[str, ...], config: StageConfig | None = None
    ) -> None:
        if fs <= 0:
            raise ValueError(f"fs must be positive, got {fs}")
        if not leads:
            raise ValueError("a stream needs at least one lead")
        self.stream_id = stream_id
        self.fs = float(fs)
        self.leads = tuple(leads)
        self.config = config or StageConfig()
        self.qrs_lead = pick_qrs_lead(self.leads)
        self._filter = CausalFilter(self.fs, len(self.leads))
        self._qrs = QrsDetector(self.fs)
        # multi-lead fusion: a second QRS candidate lead, its detector, and per-lead signal quality
        second = pick_fusion_lead(self.leads, self.qrs_lead) if self.config.fuse_leads else None
        self.qrs_leads: tuple[int, ...] = (self.qrs_lead,) + (() if second is None else (second,))
        self._second = second
        self._qrs2 = QrsDetector(self.fs) if second is not None else None
        self._sqi = SignalQuality(
            stream_id,
            self.fs,
            self.leads,
            0.0,
            self.config.quality,
            self.qrs_leads,
            lazy_leads=() if second is None else (second,),
            history_s=self.config.fuse_history_s,
        )
        # consecutive seconds the primary lead was followed and sure (see _doubtful)
        self._sure_run = 0
        self._lead_index = {name: i for i, name in enumerate(self.leads)}
        self._usable: dict[int, bool] = {}  # latest quality verdict of each QRS candidate lead
        self._bsqi: dict[int, float] = {}
        self._good_run = 0  # consecutive usable seconds of the primary lead
        self._chosen = self.qrs_lead  # the candidate lead beats come from
        # recent beats of each candidate (absolute samples), for the catch-up at a switch
        self._recent: dict[int, deque[int]] = {li: deque(maxlen=8) for li in self.qrs_leads}
        self._last_emitted = -(10**12)
        self._same_beat = round(0.15 * self.fs)  # beats of two leads this close are the same beat
        self._vf: VfDetector | None = None
        if self.config.detect_vf:
            # a rate too low for the detector's band gives no VF decisions (``unsupported``)
            with contextlib.suppress(ValueError):
                self._vf = VfDetector(self.fs)
        cfg = self.config
        # beat and cycle windows: samples before and after the beat, at the stream's rate
        self._beat_cuts: list[tuple[WindowSpec, int, int]] = []
        for spec in cfg.windows:
            if spec.kind == "beat":
                half = round(spec.samples / 2 / spec.fs * self.fs)
                self._beat_cuts.append((spec, half, half))
            elif spec.kind == "cycle":
                before, after = spec.before_s or 0.0, spec.after_s or 0.0
                self._beat_cuts.append((spec, round(before * self.fs), round(after * self.fs)))
        # leads windows whose leads the stream has: lead indices, length at the stream's rate, next end
        self._lead_cuts: list[_LeadCut] = [
            _LeadCut(spec, [self.leads.index(ld) for ld in spec.leads or ()], n, n)
            for spec in cfg.windows
            if spec.kind == "leads" and all(ld in self.leads for ld in spec.leads or ())
            for n in [round(spec.samples / spec.fs * self.fs)]
        ]
        #: model windows this stream cannot give, with the reason (``missing_leads``, ``sampling_rate``)
        self.unsupported: dict[str, str] = {
            spec.name: "missing_leads"
            for spec in cfg.windows
            if spec.kind == "leads" and not all(ld in self.leads for ld in spec.leads or ())
        }
        if self.fs < cfg.min_model_fs:
            self.unsupported.update({spec.name: "sampling_rate" for spec in cfg.windows})
            self._beat_cuts, self._lead_cuts = [], []
        if cfg.detect_vf and self._vf is None:
            self.unsupported["vf"] = "sampling_rate"
        # rebuild windows: streams of several leads that no leads window covers (see StageConfig)
        self._rebuild_n = (
            round(cfg.rebuild_window_s * self.fs)
            if cfg.rebuild_window_s > 0
            and len(self.leads) > 1
            and not self._lead_cuts
            and self._beat_cuts
            else 0
        )
        self._rebuild_next = self._rebuild_n
        self._transfer = (
            LeadTransfer(self.fs, self.leads) if self._rebuild_n and cfg.lead_transfer else None
        )
        self._learned_to = 0  # the transfer has learned the settled samples before this index
        self._rebuilt: list[tuple[ModelWindow, Recovered | None, str | None]] = []
        self._windows_on = bool(self._beat_cuts or self._lead_cuts)
        # the buffer holds the band-passed signal for model windows; without windows it only counts samples
        self._max_hold = round(
            cfg.buffer_seconds * self.fs
        )  # longer gaps restart filter and detector
        # the buffer holds the longest declared window with its post-beat wait, however long a card's
        # window is (a window longer than the buffer would otherwise never be cut)
        longest = max(
            [c.length for c in self._lead_cuts]
            + [self._rebuild_n]
            + [before + after for _, before, after in self._beat_cuts],
            default=0,
        )
        need = longest + round(cfg.post_rr_wait_s * self.fs) + round(self.fs)
        cap = max(self._max_hold, need) if self._windows_on else 1
        self._buf = SampleBuffer(cap, len(self.leads))
        self._seq = SequenceTracker()
        self._rules = RuleEngine(stream_id, self.config.rules)
        self._drop: DropoutDetector | None = None
        #: the ADC range last declared to the dropout stage (frames repeat it: set once per change)
        self._adc_range: tuple[tuple[float, float], ...] | None = None
        self.t0: float | None = None
        self._peaks: list[int] = []
        self._pending: list[
            _PendingBeat
        ] = []  # beats waiting for enough samples after them to cut windows
        self._rr: deque[float] = deque(
            maxlen=self.config.rr_history
        )  # RR intervals since the last gap
        self._rr_last: int | None = None  # last peak since the last gap
        self._post_wait = round(self.config.post_rr_wait_s * self.fs)
        self._last_n = round(self.fs)
        self._after = max((after for _, _, after in self._beat_cuts), default=0) + 1
        self._hr: float | None = None
        self._settle = round(self.config.dropout_settle_s * self.fs)
        self._mask = self._windows_on and self.config.mask_dropouts
        self._settling = [(0, 0)] * len(self.leads)  # per lead, the settle tail [from, to) to mask
        # start of each lead's open dropout run (masked up to the end of the last frame)
        self._run_start = [-1] * len(self.leads)

    @property
    def samples_seen(self) -> int:
        return self._buf.end

    def time_of(self, index: int) -> float:
        """Stream time of absolute sample ``index``."""
        return (self.t0 or 0.0) + index / self.fs

    # ----------------------------------------------------------------- frames
    def process(self, frame: Frame) -> ProcessorOutput:
        """Feed one validated frame; returns its beats, dropouts, alerts and model windows.

        A ``seq`` <= the last seen is a duplicate and is ignored; a seq jump means lost frames: a
        ``missing_frames`` dropout on every lead and the buffer advances by the gap's samples as NaN.
        Never raises on signal content (NaN, flat, clipped); a frame whose leads or rate differ from the
        stream's raises :class:`~stream.errors.FrameValidationError` (``lead_mismatch``/``fs_mismatch``)
        before any state changes.
        """
        out = ProcessorOutput()
        x = np.asarray(frame.samples, dtype=np.float32)
        if x.ndim == 1:
            x = x[:, None]
        if x.ndim != 2 or x.shape[1] != len(self.leads) or tuple(frame.leads) != self.leads:
            raise FrameValidationError(
                "lead_mismatch",
                f"frame has leads {frame.leads} / shape {x.shape}, stream {self.stream_id} has {self.leads}",
            )
        if abs(float(frame.fs) - self.fs) > 1e-6:
            raise FrameValidationError(
                "fs_mismatch", f"frame fs {frame.fs}, stream {self.stream_id} runs at {self.fs}"
            )
        status = self._seq.observe(frame.seq)
        if status.duplicate:
            out.duplicate = True
            out.heart_rate_bpm = self._hr
            return out
        st = out.stage_seconds
        if self.t0 is None:
            self.t0 = float(frame.start_time)
            self._sqi.t0 = self.t0
            self._drop = DropoutDetector(
                self.stream_id, self.fs, self.leads, self.t0, self.config.dropouts
            )
        drop = self._drop
        assert drop is not None
        if frame.adc_range_mv is not None and frame.adc_range_mv != self._adc_range:
            # declared ADC rails: saturation is judged against them
            drop.set_adc_range(frame.adc_range_mv)
            self._adc_range = frame.adc_range_mv
        t = time.perf_counter()
        if status.missing > 0:
            expected = self.time_of(self._buf.end)
            gap = round((frame.start_time - expected) * self.fs)
            if gap <= 0:
                gap = status.missing * self._last_n
            out.gap_frames = status.missing
            start = self._buf.end
            out.dropouts += drop.gap(start, gap)
            self._buf.append_gap(gap)
            if gap <= self._max_hold:
                nan = np.full((gap, len(self.leads)), np.nan, dtype=np.float32)
                self._filter.process(nan)
                self._qrs.process(nan[:, self.qrs_lead], start)
                if self._second is not None and self._sqi.awake(self._second):
                    self._qrs2.process(nan[:, self._second], start)  # type: ignore[union-attr]
            else:  # a long outage: start the filter and the detector afresh after it
                self._filter.reset()
                self._qrs.reset(start + gap)
                if self._qrs2 is not None:  # (asleep, it is reset when woken)
                    self._qrs2.reset(start + gap)
            self._pending.clear()
            self._rr_last = None  # an RR interval across lost samples is not a rhythm
            # every lead was lost over the gap: let the rules see it (signal loss, no asystole)
            out.alerts += self._rules.update(
                self.time_of(start + gap), [], False, self.time_of(start)
            )
        self._last_n = x.shape[0]
        start = self._buf.end
        t1 = time.perf_counter()
        st["dropouts"] = t1 - t
        if self._windows_on:
            self._buf.append(self._filter.process(x))
        else:  # no model windows wanted: the band-passed copy would never be read
            self._buf.append_gap(x.shape[0])
        t2 = time.perf_counter()
        st["filter"] = t2 - t1
        peaks = self._fused_beats(x, start, out)
        for p in peaks:
            rr = (p - self._peaks[-1]) / self.fs if self._peaks else None
            self._peaks.append(p)
            if len(self._peaks) > 64:
                del self._peaks[:-32]
            last = self._peaks[-(self.config.hr_beats + 1) :]
            rrs = [b - a for a, b in itertools.pairwise(last)]
            self._hr = 60.0 * self.fs / float(statistics.median(rrs)) if rrs else None
            out.beats.append(Beat(self.stream_id, int(p), self.time_of(p), rr, self._hr))
            out.beat_leads.append(self.leads[self._chosen])
            if self._windows_on:
                pre = (p - self._rr_last) / self.fs if self._rr_last is not None else None
                if self._pending and self._pending[-1].post_s is None and pre is not None:
                    self._pending[-1].post_s = pre
                self._pending.append(_PendingBeat(int(p), pre, tuple(self._rr)))
                if pre is not None:
                    self._rr.append(pre)
            self._rr_last = int(p)
        if self._vf is not None:
            out.vf = self._vf.process(x[:, self.qrs_lead], self.time_of(start))
        t3 = time.perf_counter()
        st["qrs"] = t3 - t2  # both candidate leads' detectors, their signal quality and the fusion
        out.dropouts += drop.process(x, start)
        if self._mask:
            self._mask_dropouts(out.dropouts, start)
        t4 = time.perf_counter()
        st["dropouts"] += t4 - t3
        active = drop.active()
        since = drop.open_since()
        all_lost = None
        if active.all():
            all_lost = max(s for s in since if s is not None)
        now = self.time_of(max(self._buf.end - self._qrs.latency_samples, 0))
        # asystole and pauses only count usable signal: the fused lead in no dropout and of usable quality
        ok = not bool(active[self._chosen]) and self._usable.get(self._chosen, True)
        out.alerts += self._rules.update(now, out.beats, ok, all_lost)
        t5 = time.perf_counter()
        st["rules"] = t5 - t4
        out.windows += self._windows()
        if self._rebuilt:
            out.rebuilt, self._rebuilt = self._rebuilt, []
        st["windows"] = time.perf_counter() - t5
        out.samples = x.shape[0]
        out.heart_rate_bpm = self._hr
        return out

    def _fused_beats(self, x: np.ndarray, start: int, out: ProcessorOutput) -> list[int]:
        """Run the QRS detector(s) and the signal quality on the frame; returns the beats to emit (from
        the chosen candidate lead, time order, none within 150 ms of an emitted one); ``out.quality``."""
        found = {self.qrs_lead: self._qrs.process(x[:, self.qrs_lead], start)}
        second = self._second
        if second is not None and self._sqi.awake(second):
            found[second] = self._qrs2.process(x[:, second], start)  # type: ignore[union-attr]
        quality = self._sqi.process(x, start, found)
        doubtful = self._doubtful(quality) if second is not None else False
        if (
            second is not None
            and not self._sqi.awake(second)
            and (doubtful or self._chosen != self.qrs_lead)
        ):
            quality = self._wake_second(second, start, quality, found)
        out.quality = quality
        for li, pk in found.items():
            if pk.size:
                self._recent[li].extend(pk.tolist())
        before = self._chosen
        self._choose(quality)
        chosen = self._chosen
        if second is not None and self._sqi.awake(second) and quality:
            # sleep once the primary has been followed and sure for a while
            sure = chosen == self.qrs_lead and not doubtful
            self._sure_run = self._sure_run + 1 if sure else 0
            if self._sure_run >= self.config.fuse_sleep_s:
                self._sqi.sleep(second)
                self._sure_run = 0
        # at a switch, catch up the new lead's beats decided earlier but not yet emitted
        cand = list(self._recent[chosen]) if chosen != before else found[chosen].tolist()
        beats = []
        for p in sorted(set(cand)):
            if p > self._last_emitted + self._same_beat:
                beats.append(int(p))
                self._last_emitted = int(p)
        return beats

    def _doubtful(self, quality: list[LeadQuality]) -> bool:
        """Whether this frame's quality of the primary lead lets fusion switch away from it: unusable,
        or a bSQI another lead could beat by ``fuse_margin``."""
        name = self.leads[self.qrs_lead]
        limit = 1.0 - self.config.fuse_margin
        return any(
            q.lead == name and (not q.usable or (q.bsqi is not None and q.bsqi < limit))
            for q in quality
        )

    def _wake_second(
        self,
        second: int,
        start: int,
        quality: list[LeadQuality],
        found: dict[int, np.ndarray],
    ) -> list[LeadQuality]:
        """Wake the second candidate lead: its QRS detector replays the lead's kept history (1 s chunks,
        then this frame), the signal quality re-scores its seconds of this frame with a bSQI."""
        hist, h0 = self._sqi.history(second)
        det = self._qrs2
        assert det is not None
        det.reset(h0)
        cut = max(start - h0, 0)
        step = max(1, round(self.fs))
        peaks: list[int] = []
        for s in range(0, cut, step):
            peaks += det.process(hist[s : min(s + step, cut)], h0 + s).tolist()
        now = det.process(hist[cut:], h0 + cut)
        found[second] = now
        self._recent[second].clear()
        self._recent[second].extend(peaks)
        redone = iter(self._sqi.wake(second, peaks + now.tolist()))
        self._sure_run = 0
        name = self.leads[second]
        return [next(redone) if q.lead == name else q for q in quality]

    def _choose(self, quality: list[LeadQuality]) -> None:
        """Update the candidate leads' verdicts from this frame's quality and pick the lead to follow."""
        for q in quality:
            li = self._lead_index[q.lead]
            if li in self._recent:
                self._usable[li] = q.usable
                self._bsqi[li] = q.bsqi if q.bsqi is not None else 0.0
                if li == self.qrs_lead:
                    self._good_run = self._good_run + 1 if q.usable else 0
        if len(self.qrs_leads) < 2 or not quality:
            return
        cur = self._chosen
        oth = self.qrs_leads[1] if cur == self.qrs_lead else self.qrs_lead
        ok_cur, ok_oth = self._usable.get(cur, True), self._usable.get(oth, True)
        b_cur, b_oth = self._bsqi.get(cur, 1.0), self._bsqi.get(oth, 1.0)
        margin = self.config.fuse_margin
        if ok_oth and (not ok_cur or b_oth > b_cur + margin):
            self._chosen = oth
        elif (
            cur != self.qrs_lead
            and ok_oth
            and self._good_run >= self.config.fuse_return_s
            and b_oth >= b_cur - margin
        ):
            self._chosen = self.qrs_lead  # back to the primary (the model windows' lead)

    def flush(self) -> ProcessorOutput:
        """End of stream: close open dropout runs and alert episodes."""
        out = ProcessorOutput(heart_rate_bpm=self._hr)
        if self._drop is not None:
            out.dropouts += self._drop.flush()
            if self._mask:
                self._mask_dropouts(out.dropouts, self._buf.end)
                out.windows += self._windows(final=True)  # what waited for the detector to settle
                out.rebuilt, self._rebuilt = self._rebuilt, []
        if self.t0 is not None:
            out.alerts += self._rules.flush(self.time_of(self._buf.end))
        return out

    # ---------------------------------------------------------------- windows
    def _mask_dropouts(self, segments: list[DropoutSegment], start: int) -> None:
        """NaN in the buffer over the dropouts ended in ``segments``, the confirmed runs still open and
        the settle tails after runs (``start``: first sample of the current frame)."""
        drop = self._drop
        assert drop is not None
        end = self._buf.end
        for seg in segments:
            if seg.kind == "missing_frames":  # NaN already (the filter restarts after it)
                continue
            li = self.leads.index(seg.lead)
            a = round((seg.start - drop.t0) * self.fs)
            b = round((seg.end - drop.t0) * self.fs)
            tail = self._settle if seg.kind in SETTLE_KINDS else 0
            self._buf.mask(a, b + tail, li)
            if tail:
                self._settling[li] = (b, b + tail)
        for li, run in enumerate(drop.open_runs()):
            if run is not None:  # a run open before this frame is masked up to ``start`` already
                self._buf.mask(start if run[1] == self._run_start[li] else run[1], end, li)
            self._run_start[li] = -1 if run is None else run[1]
            lo, hi = self._settling[li]
            if hi > start:  # a settle tail running into this frame
                self._buf.mask(max(lo, start), hi, li)

    def _windows(self, final: bool = False) -> list[ModelWindow]:
        cfg = self.config
        out: list[ModelWindow] = []
        end = self._buf.end
        # windows end where every sample they hold has its final dropout state (and mask)
        ready = end if final or not self._mask or self._drop is None else self._drop.settled()
        while self._pending and self._pending[0].sample + self._after <= ready:
            pb = self._pending[0]
            p = pb.sample
            if pb.post_s is None and pb.pre_s is not None and p + self._post_wait > end:
                break  # wait a little longer for the next beat: its post-RR is part of the rhythm score
            self._pending.pop(0)
            if (
                pb.post_s is None and pb.pre_s is not None
            ):  # no next beat yet: a lower bound of the pause
                pb.post_s = max(end - self._qrs.latency_samples - p, 0) / self.fs
            rr = RRContext(pb.pre_s, pb.post_s, pb.history)
            lead = self.leads[self.qrs_lead]
            for spec, before, after in self._beat_cuts:
                a, b = p - before, p + after
                if not self._buf.available(a, b):
                    continue
                seg = self._buf.get(a, b)[:, self.qrs_lead]
                missing = np.isnan(seg)
                same_rate = self.fs == spec.fs
                if spec.kind == "cycle":
                    if missing.any():
                        continue
                    # same resampling as segmentation.beat_cycles (training input)
                    data = sps.resample(seg, spec.samples) if seg.size != spec.samples else seg
                    window_rr = None
                elif not missing.any():
                    data = seg if same_rate else _fit(resample(seg, self.fs, spec.fs), spec.samples)
                    window_rr = rr
                elif cfg.emit_damaged_windows and spec.damaged and not missing.all():
                    data = (
                        seg
                        if same_rate
                        else _resample_with_gaps(seg, missing, self.fs, spec.fs, spec.samples)
                    )
                    window_rr = rr
                else:
                    continue
                out.append(
                    ModelWindow(
                        self.stream_id,
                        spec.name,
                        lead,
                        self.time_of(a),
                        spec.fs,
                        np.array(data, dtype=np.float32),
                        window_rr,
                        self.time_of(p),
                    )
                )
        for cut in self._lead_cuts:
            spec = cut.spec
            while cut.next_end <= ready:
                a, b = cut.next_end - cut.length, cut.next_end
                cut.next_end += cut.length
                if not self._buf.available(a, b):
                    continue
                seg = self._buf.get(a, b)[:, cut.idx]
                bad = np.isnan(seg).any(axis=0)
                if not bad.any():
                    data = _fit(resample(seg, self.fs, spec.fs, axis=0), spec.samples)
                elif cfg.emit_damaged_windows and spec.damaged and not bad.all():
                    filled = np.where(np.isnan(seg), 0.0, seg)
                    data = _fit(resample(filled, self.fs, spec.fs, axis=0), spec.samples)
                    data[:, bad] = np.nan
                else:
                    continue
                out.append(
                    ModelWindow(self.stream_id, spec.name, None, self.time_of(a), spec.fs, data)
                )
        if self._transfer is not None and ready > self._learned_to:
            # the transfer learns every settled sample once (masked ones are NaN: not learned)
            if self._buf.available(self._learned_to, ready):
                self._transfer.learn(self._buf.get(self._learned_to, ready))
            else:  # an outage longer than the buffer: learn afresh
                self._transfer.reset()
            self._learned_to = ready
        while self._rebuild_n and self._rebuild_next <= ready:
            a, b = self._rebuild_next - self._rebuild_n, self._rebuild_next
            self._rebuild_next += self._rebuild_n
            if not self._buf.available(a, b):
                continue
            seg = self._buf.get(a, b)
            miss = np.isnan(seg)
            if not (miss & ~miss.all(axis=1, keepdims=True)).any():
                continue  # nothing masked, or every lead masked at once: nothing to rebuild from
            win = ModelWindow(
                self.stream_id,
                REBUILD_WINDOW,
                ",".join(self.leads),
                self.time_of(a),
                self.fs,
                np.array(seg, dtype=np.float32),
            )
            if self._transfer is None:
                out.append(win)  # the scoring stage's lead_recon rebuilds it or says why not
                continue
            r = self._transfer.rebuild(win.data)
            rec = None
            if (r.provenance == MODEL).any():
                rec = Recovered(
                    replace(win, data=r.filled.astype(np.float32)),
                    r.by,
                    float(np.mean(r.provenance != MEASURED)),
                    r.provenance,
                    r.half_width_90,
                )
            self._rebuilt.append((win, rec, r.reason))
        return out


def _resample_with_gaps(
    seg: np.ndarray, missing: np.ndarray, fs: float, target_fs: float, n: int, guard_s: float = 0.01
) -> np.ndarray:
    """Resample a 1-D segment holding NaN to ``n`` samples at ``target_fs``: gaps zero-filled for the filter,
    then NaN again wherever an output sample lies within ``guard_s`` of a missing input sample."""
    y = _fit(resample(np.where(missing, 0.0, seg), fs, target_fs), n).astype(np.float32)
    t_in = np.flatnonzero(missing) / fs
    t_out = np.arange(n) / target_fs
    pos = np.searchsorted(t_in, t_out)
    near = np.full(n, np.inf)
    for idx in (np.clip(pos - 1, 0, t_in.size - 1), np.clip(pos, 0, t_in.size - 1)):
        near = np.minimum(near, np.abs(t_in[idx] - t_out))
    y[near <= guard_s + 0.5 / fs] = np.nan
    return y


def _fit(x: np.ndarray, n: int) -> np.ndarray:
    """Crop or edge-pad axis 0 of ``x`` to exactly ``n`` samples (resampling may be off by one)."""
    if x.shape[0] == n:
        return np.asarray(x, dtype=np.float32)
    if x.shape[0] > n:
        return np.asarray(x[:n], dtype=np.float32)
    pad = [(0, n - x.shape[0])] + [(0, 0)] * (x.ndim - 1)
    return np.pad(np.asarray(x, dtype=np.float32), pad, mode="edge")
