"""``python -m training bench-models``: what one window costs each stream model, and where it goes.

For each model (the stream's beat models ``cae``, ``beat_vae``, ``beat_class`` and the 12-lead
``vae_bilstm``, ``vae_bilstm_mha``, ``lead_recon``, or any other artifact with the same runtime):

- ``session``: ONNX Runtime's ``session.run`` alone on ready-made inputs (what the runtime feeds the graph,
  the outputs it asks for), at batch sizes 1, 8, 32, 128, with 1 or 2 intra-op threads and graph
  optimisation ``basic``, ``extended`` or ``all``: milliseconds per window;
- ``scorer``: the whole stream path of the model (its runtime's ``score(windows)``; ``beat_class``:
  :meth:`stream.stages.beatclass.BeatClassStage.classify` on scored beats; ``lead_recon``:
  ``recover(windows)`` of windows with missing leads) with the project's session options
  (:func:`models.runtime.base.session_options`), at the stream's batch sizes: milliseconds per window.

The windows are real: beat windows cut by :class:`stream.stages.processor.StreamProcessor` from MIT-BIH
record 100 (2 leads, 360 Hz, 1 s frames) with the cards' WindowSpecs, 12-lead windows cut by the same
processor from PTB-XL records (``records100``). Every figure is the median of ``runs`` runs, each run
the mean over enough calls to last about 20 ms.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort

from models.card import BEAT_400, BEAT_720, LEADS_10S, load_card
from models.runtime.protocol import Window

BEAT_MODELS = ("cae", "beat_vae", "beat_class")
LEAD_MODELS = ("vae_bilstm", "vae_bilstm_mha", "lead_recon")
DEFAULT_MODELS = BEAT_MODELS + LEAD_MODELS
SESSION_BATCHES = (1, 8, 32, 128)
SCORER_BATCHES = (1, 8, 32, 64)
LEVELS = {
    "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
    "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
    "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
}
THREADS = (1, 2)


# ------------------------------------------------------------------------------------------ windows
def beat_windows(
    data_dir: Path, record: str = "100", seconds: int = 360, warmup_s: float = 150.0
) -> list[Window]:
    """``beat_720`` and ``beat_400`` windows cut by the stream processor from a MIT-BIH record, those of
    the first ``warmup_s`` left out (a stream in steady state: every beat has its full RR history)."""
    from stream.stages.processor import StageConfig, StreamProcessor
    from stream.testing import record_frames, run_processor

    path = Path(data_dir) / "mitdb" / record
    frames = list(record_frames(path, seconds=seconds, stream_id="bench"))
    if not frames:
        return []
    cfg = StageConfig(windows=(BEAT_720, BEAT_400))
    proc = StreamProcessor("bench", frames[0].fs, tuple(frames[0].leads), cfg)
    t0 = frames[0].start_time + warmup_s
    return [
        w
        for w in run_processor(proc, frames, flush=False).windows
        if (w.beat_time if w.beat_time is not None else w.start) >= t0
    ]


def lead_windows(data_dir: Path, n: int = 64) -> list[Window]:
    """``leads_10s`` windows (12 leads, 100 Hz) cut by the stream processor from ``n`` PTB-XL records."""
    from stream.stages.processor import StageConfig, StreamProcessor
    from stream.testing import record_frames, run_processor

    heads = sorted((Path(data_dir) / "ptbxl" / "records100").glob("*/*_lr.hea"))
    out: list[Window] = []
    for head in heads:
        frames = list(record_frames(head.with_suffix(""), seconds=10, stream_id=head.stem))
        if not frames:
            continue
        proc = StreamProcessor(
            head.stem, frames[0].fs, tuple(frames[0].leads), StageConfig(windows=(LEADS_10S,))
        )
        got = run_processor(proc, frames, flush=False).windows
        out += [w for w in got if w.kind == LEADS_10S.name and np.isfinite(w.data).all()]
        if len(out) >= n:
            break
    return out[:n]


def with_missing_leads(windows: Sequence[Window], seed: int = 0) -> list[Window]:
    """Copies of 12-lead windows with 1 to 3 leads missing (NaN), as the lead recoverer gets them."""
    from dataclasses import replace

    rng = np.random.default_rng(seed)
    out = []
    for w in windows:
        x = np.array(w.data, dtype=np.float32)
        x[:, rng.choice(12, size=int(rng.integers(1, 4)), replace=False)] = np.nan
        out.append(replace(w, data=x))
    return out


def _cycle(windows: Sequence[Window], n: int) -> list[Window]:
    """``n`` windows (repeating ``windows`` when there are fewer)."""
    return [windows[i % len(windows)] for i in range(n)]


# ------------------------------------------------------------------------------------------ timing
def time_call(fn: Callable[[], Any], runs: int = 5, target_s: float = 0.02) -> float:
    """Median seconds of one call of ``fn`` over ``runs`` runs (each the mean of enough calls to last
    about ``target_s``), after one warm-up call."""
    t = time.perf_counter()
    fn()
    first = time.perf_counter() - t
    reps = max(1, min(200, int(target_s / max(first, 1e-6))))
    per: list[float] = []
    for _ in range(runs):
        t = time.perf_counter()
        for _ in range(reps):
            fn()
        per.append((time.perf_counter() - t) / reps)
    return float(np.median(per))


def _ms(seconds: float, n: int) -> float:
    return round(seconds * 1e3 / n, 4)


# ------------------------------------------------------------------------------------------ models
class _Case:
    """One model: its ONNX file, its session feeds and outputs at a batch size, its scorer path."""

    def __init__(
        self,
        name: str,
        onnx_path: Path,
        feeds: Callable[[int], dict[str, np.ndarray]],
        outputs: list[str] | None,
        scorer: Callable[[int], Callable[[], Any]],
    ) -> None:
        self.name = name
        self.onnx_path = onnx_path
        self.feeds = feeds
        self.outputs = outputs
        self.scorer = scorer


def _cases(
    names: Sequence[str], data_dir: Path, models_dir: Path | None, record: str, seconds: int
) -> list[_Case]:
    from models.runtime.registry import artifacts_dir, load_model

    root = artifacts_dir(models_dir)
    cases: list[_Case] = []
    beats: list[Window] | None = None
    leads: list[Window] | None = None
    for name in names:
        card = load_card(root / f"{name}.card.json")
        path = root / card.onnx_file
        kind = card.window.name
        if kind in (BEAT_720.name, BEAT_400.name) or card.runtime == "beat_class":
            beats = beats if beats is not None else beat_windows(data_dir, record, seconds)
        else:
            leads = leads if leads is not None else lead_windows(data_dir, 128)
        if card.runtime == "beat_class":
            cases.append(_beat_class_case(name, path, beats or [], models_dir))
            continue
        model: Any = load_model(name, models_dir)
        if kind in (BEAT_720.name, BEAT_400.name):
            ws = [w for w in beats or [] if w.kind == kind and np.isfinite(w.data).all()]
            cases.append(_beat_case(name, path, card.runtime, model, ws))
        elif card.runtime == "lead_recon":
            cases.append(_lead_recon_case(name, path, model, with_missing_leads(leads or [])))
        else:
            cases.append(_anomaly12_case(name, path, model, leads or []))
    return cases


def _beat_case(name: str, path: Path, runtime: str, model: Any, ws: list[Window]) -> _Case:
    from models.runtime.beat_vae import normalise
    from models.runtime.cae import normalise_windows

    def scorer(b: int) -> Callable[[], Any]:
        items = _cycle(ws, b)
        return lambda: model.score(items)

    if runtime == "beat_vae":
        z0 = np.zeros((1, 25), dtype=np.float32)

        def vae_feeds(b: int) -> dict[str, np.ndarray]:
            return {"beat": normalise(np.stack([w.data for w in _cycle(ws, b)])), "z": z0}

        return _Case(name, path, vae_feeds, ["recon", "mu", "logvar"], scorer)

    def cae_feeds(b: int) -> dict[str, np.ndarray]:
        x = np.stack([w.data for w in _cycle(ws, b)])
        return {model.input_name: normalise_windows(x, model.method, model.eps)}

    return _Case(name, path, cae_feeds, ["score"], scorer)


def _beat_class_case(name: str, path: Path, beats: list[Window], models_dir: Path | None) -> _Case:
    from models.runtime.beat_class import BeatClassifier
    from models.runtime.registry import load_scorer
    from stream.stages.beatclass import BeatClassStage

    cae, vae = load_scorer("cae", models_dir), load_scorer("beat_vae", models_dir)
    b720 = [w for w in beats if w.kind == BEAT_720.name and np.isfinite(w.data).all()]
    b400 = [w for w in beats if w.kind == BEAT_400.name]
    scores = cae.score(b720) + vae.score(b400)
    clf = BeatClassifier(path)
    feats = BeatClassStage(None).features(beats, scores)
    x = np.stack([f for _, f, _ in feats]).astype(np.float32)

    def feeds(b: int) -> dict[str, np.ndarray]:
        return {clf.input_name: x[np.arange(b) % len(x)]}

    def scorer(b: int) -> Callable[[], Any]:
        # the first b beats (their beat_720 and beat_400 windows and scores), one stage per batch size
        times = {w.beat_time for w in b720[:b]}
        ws = [w for w in beats if w.beat_time in times]
        sc = [s for s in scores if s.time in {w.start for w in ws}]
        stage = BeatClassStage(clf)
        return lambda: stage.classify(ws, sc)

    return _Case(name, path, feeds, ["probs"], scorer)


def _anomaly12_case(name: str, path: Path, model: Any, ws: list[Window]) -> _Case:
    def feeds(b: int) -> dict[str, np.ndarray]:
        return {"ecg": np.stack([w.data for w in _cycle(ws, b)]).astype(np.float32)}

    def scorer(b: int) -> Callable[[], Any]:
        items = _cycle(ws, b)
        return lambda: model.score(items)

    return _Case(name, path, feeds, None, scorer)


def _lead_recon_case(name: str, path: Path, model: Any, ws: list[Window]) -> _Case:
    def feeds(b: int) -> dict[str, np.ndarray]:
        x = np.stack([w.data for w in _cycle(ws, b)])
        m = np.isfinite(x).all(axis=1).astype(np.float32)
        return {"ecg": np.nan_to_num(x).astype(np.float32), "mask": m}

    def scorer(b: int) -> Callable[[], Any]:
        items = _cycle(ws, b)
        return lambda: model.recover(items)

    return _Case(name, path, feeds, ["recon"], scorer)


# ------------------------------------------------------------------------------------------ bench
def _runner(
    sess: ort.InferenceSession, names: list[str], feeds: dict[str, np.ndarray]
) -> Callable[[], Any]:
    return lambda: sess.run(names, feeds)


def bench_session(
    case: _Case,
    batches: Sequence[int] = SESSION_BATCHES,
    threads: Sequence[int] = THREADS,
    levels: Sequence[str] = tuple(LEVELS),
    runs: int = 5,
) -> dict[str, dict[str, float]]:
    """``{"<level>/t<threads>": {"<batch>": ms per window}}`` of ``session.run`` alone."""
    out: dict[str, dict[str, float]] = {}
    feeds = {b: case.feeds(b) for b in batches}
    for level in levels:
        for t in threads:
            so = ort.SessionOptions()
            so.intra_op_num_threads = t
            so.inter_op_num_threads = 1
            so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
            so.graph_optimization_level = LEVELS[level]
            sess = ort.InferenceSession(
                str(case.onnx_path), sess_options=so, providers=["CPUExecutionProvider"]
            )
            names = case.outputs or [o.name for o in sess.get_outputs()]
            inputs = {i.name for i in sess.get_inputs()}
            row = {}
            for b in batches:
                fd = {k: v for k, v in feeds[b].items() if k in inputs}
                row[str(b)] = _ms(time_call(_runner(sess, names, fd), runs), b)
            out[f"{level}/t{t}"] = row
    return out


def bench_scorer(
    case: _Case, batches: Sequence[int] = SCORER_BATCHES, runs: int = 5
) -> dict[str, float]:
    """``{"<batch>": ms per window}`` of the model's whole stream scoring path."""
    return {str(b): _ms(time_call(case.scorer(b), runs), b) for b in batches}


def bench_models(
    data_dir: Path,
    models: Sequence[str] = DEFAULT_MODELS,
    models_dir: Path | None = None,
    runs: int = 5,
    session: bool = True,
    session_batches: Sequence[int] = SESSION_BATCHES,
    scorer_batches: Sequence[int] = SCORER_BATCHES,
    levels: Sequence[str] = tuple(LEVELS),
    threads: Sequence[int] = THREADS,
    record: str = "100",
    seconds: int = 360,
    progress: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Per model: ``session`` (ORT alone, per level/threads and batch) and ``scorer`` (stream path per
    batch), milliseconds per window (medians of ``runs`` runs)."""
    out: dict[str, Any] = {
        "unit": "ms per window (median of runs)",
        "runs": runs,
        "onnxruntime": ort.__version__,
        "windows": {
            "beat": f"mitdb/{record}, {seconds} s (first 150 s left out: steady state), "
            "StreamProcessor (beat_720, beat_400)",
            "leads": "PTB-XL records100, StreamProcessor (leads_10s); lead_recon: 1-3 leads NaN",
        },
        "models": {},
    }
    for case in _cases(models, Path(data_dir), models_dir, record, seconds):
        if progress is not None:
            progress(case.name)
        res: dict[str, Any] = {"scorer": bench_scorer(case, scorer_batches, runs)}
        if session:
            res["session"] = bench_session(case, session_batches, threads, levels, runs)
        out["models"][case.name] = res
    return out


def format_table(result: dict[str, Any]) -> str:
    """Plain-text tables of :func:`bench_models`' result, one per model."""
    lines = [f"{result['unit']}; onnxruntime {result['onnxruntime']}"]
    for name, res in result["models"].items():
        lines.append(f"\n== {name}")
        sc = res["scorer"]
        lines.append("  scorer path   " + "  ".join(f"b{b}={v:.4f}" for b, v in sc.items()))
        for key, row in res.get("session", {}).items():
            lines.append(
                f"  session {key:<13}" + "  ".join(f"b{b}={v:.4f}" for b, v in row.items())
            )
    return "\n".join(lines)
