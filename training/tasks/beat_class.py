"""``beat_class``: AAMI beat classifier (N, S, V, F, Q) on MIT-BIH, inter-patient (de Chazal DS1 -> DS2).

Features come from the stream's own path, so there is no train/serve skew: every record is replayed
frame by frame (1 s frames, the record's rate, both leads) through :class:`StreamProcessor` cutting
``beat_720`` and ``beat_400`` windows, scored by :class:`WindowScorer` (``cae``, ``beat_vae``, with the
``lstm_ae`` recoverer) and featurised by :class:`stream.stages.beatclass.BeatClassStage` with no
classifier (:mod:`models.preprocessing.beatfeatures`). Detected beats are matched one-to-one to the
reference beats within 150 ms (closest first); a matched beat whose symbol is in ``AAMI_CLASSES`` gets
that class, other detections are left out of training (and counted in evaluation). Paced records are
excluded. Features per record are cached under ``cache_dir/beat_class/`` keyed by the record files'
sha256, the featurizer and stage sources and the scoring models' sha256.

Model selection uses DS1 only: leave-records-out cross-validation (records grouped into ``cv.folds``
folds), choosing the MLP's size, class weighting and the decision rule's class weights
(``argmax(p * w)``) on the pooled out-of-fold predictions. DS2 is read only by ``evaluate``.
"""

from __future__ import annotations

import hashlib
import inspect
import json
from pathlib import Path
from typing import Any

import numpy as np

from models.card import BEAT_720
from models.card import contract as card_contract
from training.datasets.mitdb_split import AAMI_CLASSES, MITDB_DS1, MITDB_DS2, MITDB_PACED
from training.errors import DataError
from training.registry import ModelSpec, TaskContext

NAME = "beat_class"
CLASSES: tuple[str, ...] = ("N", "S", "V", "F", "Q")
MATCH_TOLERANCE_S = 0.150
SCORING_MODELS = ("cae", "beat_vae")
#: the typed card contract (the stream classifies the beats of beat_720 windows with it)
CARDS = {
    NAME: card_contract(
        "classifier",
        "beat_class",
        BEAT_720,
        {
            "method": "standardise",
            "where": "graph",
            "description": "features standardised with the training mean/std inside the graph",
        },
    )
}
PUBLISHED = {
    "de Chazal 2004 (DS1->DS2)": {
        "veb.se": 77.7,
        "veb.ppv": 81.9,
        "sveb.se": 75.9,
        "sveb.ppv": 38.5,
    }
}
GOALS = {"veb.se": 95.0, "veb.ppv": 95.0, "sveb.se": 80.0, "sveb.ppv": 60.0}


# ----------------------------------------------------------------------------------------- features
def pair_beats(ref: np.ndarray, test: np.ndarray, tol: int) -> np.ndarray:
    """For each ``test`` detection the index of its matched ``ref`` beat (-1: none); one-to-one within
    ``tol`` samples, closest pairs first (as :func:`training.eval_detectors.match_beats`)."""
    ref = np.asarray(ref, dtype=np.int64)
    test = np.asarray(test, dtype=np.int64)
    out = np.full(test.size, -1, dtype=np.int64)
    if ref.size == 0 or test.size == 0:
        return out
    order_r = np.argsort(ref, kind="stable")
    rs = ref[order_r]
    lo = np.searchsorted(rs, test - tol, side="left")
    hi = np.searchsorted(rs, test + tol, side="right")
    cnt = hi - lo
    ti = np.repeat(np.arange(test.size), cnt)
    if ti.size == 0:
        return out
    ri = np.concatenate([np.arange(a, b) for a, b in zip(lo[cnt > 0], hi[cnt > 0], strict=True)])
    dist = np.abs(rs[ri] - test[ti])
    used_r = np.zeros(ref.size, dtype=bool)
    for k in np.argsort(dist, kind="stable").tolist():
        t, r = ti[k], ri[k]
        if out[t] < 0 and not used_r[r]:
            used_r[r] = True
            out[t] = order_r[r]
    return out


def _file_sha(paths: list[Path]) -> str:
    h = hashlib.sha256()
    for p in paths:
        h.update(p.read_bytes())
    return h.hexdigest()


def feature_code_key(models_dir: Path | None = None) -> str:
    """Hash of what the cached features depend on: the featurizer, the stage, the processor and scorer
    sources and the scoring models' ONNX sha256."""
    import models.preprocessing.beatfeatures as bf
    import stream.stages.beatclass as bc
    import stream.stages.processor as sp
    import stream.stages.scoring as ss
    from models.card import load_card
    from models.runtime.registry import artifacts_dir

    h = hashlib.sha256()
    for mod in (bf, bc, sp, ss):
        h.update(inspect.getsource(mod).encode())
    root = artifacts_dir(models_dir)
    for name in (*SCORING_MODELS, "lstm_ae"):
        h.update(load_card(root / f"{name}.card.json").onnx_sha256.encode())
    return h.hexdigest()[:16]


def replay_record(
    data_dir: Path, record: str, scorer: Any, seconds: float | None = None, chunk_s: float = 60.0
) -> dict[str, np.ndarray]:
    """Replay one MIT-BIH record through processor -> scorer -> BeatClassStage (features only).

    Returns ``x`` [n, F] features, ``sqi`` [n], ``sample`` [n] detected R sample, ``label`` [n] AAMI class
    index (-1: unmatched detection or non-AAMI symbol), ``symbol`` [n], and the reference counts."""
    from stream.records import read_annotations, read_record
    from stream.stages.beatclass import BeatClassStage
    from stream.stages.frame import Frame
    from stream.stages.processor import StageConfig, StreamProcessor
    from training.eval_detectors import FRAME_S, T0

    path = Path(data_dir) / "mitdb" / record
    rec = read_record(path)
    sig = rec.signal if seconds is None else rec.signal[: round(seconds * rec.fs)]
    proc = StreamProcessor(record, rec.fs, rec.leads, StageConfig(windows=scorer.window_specs))
    stage = BeatClassStage(None)
    n = round(FRAME_S * rec.fs)
    rows: list[tuple[Any, np.ndarray, float]] = []
    pending: list[Any] = []
    per_chunk = max(1, round(chunk_s / FRAME_S))

    def flush_windows() -> None:
        if pending:
            res = scorer.score(pending)
            rows.extend(stage.features(pending, res.scores))
            pending.clear()

    for seq, s in enumerate(range(0, sig.shape[0], n)):
        out = proc.process(Frame(record, seq, rec.fs, rec.leads, T0 + s / rec.fs, sig[s : s + n]))
        pending.extend(out.windows)
        if (seq + 1) % per_chunk == 0:
            flush_windows()
    pending.extend(proc.flush().windows)
    flush_windows()
    if not rows:
        raise DataError(f"record {record}: no beats classified")
    bt = np.array([w.beat_time for w, _, _ in rows], dtype=np.float64)
    det = np.round((bt - T0) * rec.fs).astype(np.int64)
    ann = read_annotations(path).beats()
    keep = ann.sample < sig.shape[0]
    ref, sym = ann.sample[keep], ann.symbol[keep]
    match = pair_beats(ref, det, round(MATCH_TOLERANCE_S * rec.fs))
    symbol = np.where(match >= 0, sym[np.maximum(match, 0)], "")
    label = np.array(
        [CLASSES.index(AAMI_CLASSES[s]) if s in AAMI_CLASSES else -1 for s in symbol.tolist()],
        dtype=np.int64,
    )
    ref_cls = np.array([AAMI_CLASSES.get(s, "") for s in sym.tolist()])
    return {
        "x": np.stack([r[1] for r in rows]).astype(np.float32),
        "sqi": np.array([r[2] for r in rows], dtype=np.float32),
        "sample": det,
        "label": label,
        "symbol": symbol.astype("U2"),
        "ref_counts": np.array([int((ref_cls == c).sum()) for c in CLASSES], dtype=np.int64),
    }


def record_features(
    ctx: TaskContext, records: tuple[str, ...] | list[str], scorer: Any = None
) -> dict[str, dict[str, np.ndarray]]:
    """Cached :func:`replay_record` of each record (``cache_dir/beat_class/<record>-<key>.npz``)."""
    from stream.stages.scoring import WindowScorer

    code = feature_code_key(ctx.artifacts_dir)
    out: dict[str, dict[str, np.ndarray]] = {}
    cache = Path(ctx.cache_dir) / NAME
    cache.mkdir(parents=True, exist_ok=True)
    for r in records:
        if r in MITDB_PACED:
            continue
        base = Path(ctx.data_dir) / "mitdb" / r
        key = hashlib.sha256(
            (code + _file_sha([base.with_suffix(e) for e in (".hea", ".dat", ".atr")])).encode()
        ).hexdigest()[:16]
        f = cache / f"{r}-{key}.npz"
        if f.is_file():
            with np.load(f) as z:
                out[r] = {k: z[k] for k in z.files}
            continue
        if scorer is None:
            scorer = WindowScorer(models=SCORING_MODELS, models_dir=ctx.artifacts_dir)
        if ctx.progress:
            print(f"{NAME}: replaying record {r}", flush=True)
        d = replay_record(ctx.data_dir, r, scorer)
        np.savez_compressed(f, **d)  # type: ignore[arg-type]
        out[r] = d
    return out


# --------------------------------------------------------------------------------------- data sets
def dataset(
    feats: dict[str, dict[str, np.ndarray]],
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(x, y, record index)`` of the labelled beats (matched, AAMI symbol) of ``feats``."""
    xs, ys, gs = [], [], []
    for i, r in enumerate(sorted(feats)):
        d = feats[r]
        keep = d["label"] >= 0
        xs.append(d["x"][keep])
        ys.append(d["label"][keep])
        gs.append(np.full(int(keep.sum()), i))
    return np.concatenate(xs), np.concatenate(ys), np.concatenate(gs)


def feature_mask(feature_set: str) -> np.ndarray:
    """1 for the features a named set keeps: ``all``, ``no_raw_embedding`` (drops the VAE latent means,
    keeps their difference from the stream's dominant beat), ``no_embedding`` (drops both), ``relative``
    (also drops the raw morphology amplitudes: only patient-relative and scale-free features)."""
    from models.preprocessing.beatfeatures import EMB_NAMES, EMB_REL_NAMES, FEATURE_NAMES

    drop: set[str] = set()
    if feature_set in ("no_raw_embedding", "no_embedding", "relative"):
        drop |= set(EMB_NAMES)
    if feature_set in ("no_embedding", "relative"):
        drop |= set(EMB_REL_NAMES)
    if feature_set == "relative":
        drop |= {"r_amp", "qrs_pp", "qrs_energy", "qrs_area", "qrs_area_abs", "slope_up"}
        drop |= {"slope_down", "t_amp", "p_energy", "vae_log_mse", "cae", "avg_rr_s"}
    elif feature_set != "all" and feature_set not in ("no_raw_embedding", "no_embedding"):
        raise DataError(f"unknown feature_set {feature_set!r}")
    return np.array([0.0 if n in drop else 1.0 for n in FEATURE_NAMES], dtype=np.float32)


def class_weights(y: np.ndarray, power: float) -> np.ndarray:
    """Loss weight per class: (n / (5 n_c)) ** power, classes without beats weight 0, capped at 50."""
    n = np.bincount(y, minlength=len(CLASSES)).astype(np.float64)
    w = np.where(n > 0, (n.sum() / (len(CLASSES) * np.maximum(n, 1))) ** power, 0.0)
    return np.minimum(w, 50.0).astype(np.float32)


def fit_mlp(x: np.ndarray, y: np.ndarray, params: dict[str, Any], seed: int = 0) -> Any:
    """Train a :class:`models.beat_class.BeatMLP` (Adam, weighted cross-entropy, cosine schedule)."""
    import torch

    from models.beat_class import BeatMLP

    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    mean = x.mean(axis=0)
    std = x.std(axis=0)
    std = np.where(std > 1e-6, std, 1.0)
    model = BeatMLP(
        x.shape[1],
        hidden=tuple(params["hidden"]),
        dropout=float(params.get("dropout", 0.1)),
        mean=mean,
        std=std,
        mask=feature_mask(params["feature_set"]),
    )
    w = torch.from_numpy(class_weights(y, float(params["class_weight_power"])))
    loss_fn = torch.nn.CrossEntropyLoss(weight=w)
    epochs = int(params.get("epochs", 30))
    bs = int(params.get("batch_size", 256))
    opt = torch.optim.AdamW(
        model.parameters(),
        lr=float(params.get("lr", 2e-3)),
        weight_decay=float(params.get("wd", 1e-4)),
    )
    steps = epochs * int(np.ceil(len(x) / bs))
    sched = torch.optim.lr_scheduler.OneCycleLR(
        opt, max_lr=float(params.get("lr", 2e-3)), total_steps=steps
    )
    xt = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))
    yt = torch.from_numpy(y.astype(np.int64))
    model.train()
    for _ in range(epochs):
        perm = torch.from_numpy(rng.permutation(len(x)))
        for s in range(0, len(x), bs):
            idx = perm[s : s + bs]
            opt.zero_grad()
            loss = loss_fn(model.logits(xt[idx]), yt[idx])
            loss.backward()
            opt.step()
            sched.step()
    return model.eval()


def predict(model: Any, x: np.ndarray) -> np.ndarray:
    import torch

    with torch.no_grad():
        return model(torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))).numpy()


def figures(y: np.ndarray, pred: np.ndarray) -> dict[str, Any]:
    """Gross AAMI figures (percent) and the confusion matrix (rows reference, columns predicted, in
    :data:`CLASSES` order). VEB/SVEB: Se = TP / reference beats of the class, +P = TP / beats labelled
    the class."""
    cm = np.zeros((len(CLASSES), len(CLASSES)), dtype=np.int64)
    np.add.at(cm, (y, pred), 1)
    out: dict[str, Any] = {"units": "percent", "beats": len(y)}
    for key, c in (("veb", 2), ("sveb", 1)):
        tp = int(cm[c, c])
        out[f"{key}.se"] = round(100.0 * tp / cm[c].sum(), 2) if cm[c].sum() else None
        out[f"{key}.ppv"] = round(100.0 * tp / cm[:, c].sum(), 2) if cm[:, c].sum() else None
        out[f"{key}.fpr"] = (
            round(100.0 * (cm[:, c].sum() - tp) / (cm.sum() - cm[c].sum()), 3)
            if cm.sum() - cm[c].sum()
            else None
        )
    out["accuracy"] = round(100.0 * np.trace(cm) / max(cm.sum(), 1), 2)
    out["confusion"] = {"classes": list(CLASSES), "rows_reference_cols_predicted": cm.tolist()}
    return out


def objective(y: np.ndarray, pred: np.ndarray) -> float:
    """What model selection maximises: F1(S) + F1(V) + F1(F), the ectopic classes (the goals name S and
    V; F keeps the rule from buying them with fusion labels on normal beats)."""
    total = 0.0
    for c in (1, 2, 3):
        tp = float(np.sum((y == c) & (pred == c)))
        p = float(np.sum(pred == c))
        t = float(np.sum(y == c))
        total += 2 * tp / (p + t) if p + t else 0.0
    return total


WEIGHT_GRID = (0.25, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0)


def tune_decision(y: np.ndarray, probs: np.ndarray) -> tuple[list[float], float]:
    """Class weights ``w`` (N fixed at 1, Q at 1) of ``argmax(p * w)`` maximising :func:`objective`,
    searched on a grid for S, V and F."""
    best = ([1.0] * len(CLASSES), objective(y, probs.argmax(axis=1)))
    for ws in WEIGHT_GRID:
        for wv in WEIGHT_GRID:
            for wf in (0.25, 0.5, 1.0, 2.0):
                w = np.array([1.0, ws, wv, wf, 1.0])
                j = objective(y, (probs * w).argmax(axis=1))
                if j > best[1] + 1e-12:
                    best = (w.tolist(), j)
    return best


def cv_folds(n_records: int, folds: int, seed: int) -> list[np.ndarray]:
    """Records (indices) shuffled with ``seed`` and dealt into ``folds`` groups."""
    perm = np.random.default_rng(seed).permutation(n_records)
    return [perm[i::folds] for i in range(folds)]


def cross_validate(
    x: np.ndarray, y: np.ndarray, g: np.ndarray, params: dict[str, Any], folds: int, seed: int
) -> np.ndarray:
    """Out-of-fold probabilities ``[n, 5]`` of leave-records-out cross-validation."""
    oof = np.zeros((len(y), len(CLASSES)), dtype=np.float32)
    for k, test_recs in enumerate(cv_folds(int(g.max()) + 1, folds, seed)):
        te = np.isin(g, test_recs)
        model = fit_mlp(x[~te], y[~te], params, seed=seed + k)
        oof[te] = predict(model, x[te])
    return oof


def _grid(cfg: dict[str, Any]) -> list[dict[str, Any]]:
    base = dict(cfg["model"])
    out = []
    for fs in cfg["search"]["feature_set"]:
        for hidden in cfg["search"]["hidden"]:
            for power in cfg["search"]["class_weight_power"]:
                out.append(
                    {**base, "feature_set": fs, "hidden": list(hidden), "class_weight_power": power}
                )
    return out


def _ctx_records(ctx: TaskContext, records: tuple[str, ...]) -> list[str]:
    limit = ctx.config.get("data", {}).get("limit")
    recs = [r for r in records if r not in MITDB_PACED]
    return recs[: int(limit)] if limit else recs


# -------------------------------------------------------------------------------------- commands
def prepare(ctx: TaskContext) -> dict[str, Any]:
    """Replay and cache DS1 (training) features; DS2 is replayed only by ``evaluate``."""
    feats = record_features(ctx, _ctx_records(ctx, MITDB_DS1))
    _, y, _ = dataset(feats)
    return {
        "ds1_records": len(feats),
        "ds1_beats": dict(zip(CLASSES, np.bincount(y, minlength=5).tolist(), strict=True)),
    }


def train(ctx: TaskContext) -> Path:
    """Patient-wise CV on DS1 over the config's grid, decision weights tuned on the pooled out-of-fold
    predictions of the best setting, then the final MLP fitted on all of DS1."""
    import time

    import torch

    from training.trainer import start_run, write_json

    cfg = ctx.config
    seed = int(cfg.get("seed", 0))
    run_dir = start_run(ctx, NAME, seed=seed)
    t0 = time.time()
    recs = _ctx_records(ctx, MITDB_DS1)
    feats = record_features(ctx, recs)
    x, y, g = dataset(feats)
    folds = min(int(cfg["cv"]["folds"]), int(g.max()) + 1)
    results = []
    best: tuple[float, dict[str, Any], np.ndarray, list[float]] | None = None
    for params in _grid(cfg):
        t = time.time()
        oof = cross_validate(x, y, g, params, folds, seed)
        j_argmax = objective(y, oof.argmax(axis=1))
        w, j = tune_decision(y, oof)
        fig = figures(y, (oof * np.array(w)).argmax(axis=1))
        row = {
            "params": params,
            "objective_argmax": round(j_argmax, 4),
            "objective_tuned": round(j, 4),
            "class_weights": w,
            "figures": {k: v for k, v in fig.items() if k != "confusion"},
            "seconds": round(time.time() - t, 1),
        }
        results.append(row)
        if ctx.progress:
            print(json.dumps(row), flush=True)
        if best is None or j > best[0]:
            best = (j, params, oof, w)
    assert best is not None
    _, params, oof, w = best
    cv_fig = figures(y, (oof * np.array(w)).argmax(axis=1))
    cv_argmax = figures(y, oof.argmax(axis=1))
    model = fit_mlp(x, y, params, seed=seed)
    torch.save(model.state_dict(), run_dir / "checkpoint.pt")
    metrics = {
        "ds1_cv": {
            **cv_fig,
            "protocol": f"MIT-BIH DS1 ({len(feats)} records), leave-records-out CV, {folds} folds "
            f"(records shuffled with seed {seed}), out-of-fold predictions pooled; decision weights "
            "tuned on the same pooled predictions (F1(S) + F1(V) + F1(F))",
            "argmax_rule": {k: v for k, v in cv_argmax.items() if k != "confusion"},
        },
        "selected": {"params": params, "class_weights": w},
        "search": results,
        "ds1_beats": dict(zip(CLASSES, np.bincount(y, minlength=5).tolist(), strict=True)),
        "records": sorted(feats),
        "seconds": round(time.time() - t0, 1),
    }
    write_json(run_dir / "metrics.json", metrics)
    write_json(
        run_dir / "model.json", {"params": params, "class_weights": w, "n_features": x.shape[1]}
    )
    if ctx.progress:
        print(
            json.dumps(
                {"ds1_cv": {k: v for k, v in cv_fig.items()}, "selected": metrics["selected"]}
            )
        )
    return run_dir


def _load_run(ctx: TaskContext) -> tuple[Any, Path, dict[str, Any]]:
    import torch

    from models.beat_class import BeatMLP
    from training.trainer import latest_run_dir

    run_dir = ctx.run_dir or latest_run_dir(ctx.runs_dir, NAME)
    spec = json.loads((run_dir / "model.json").read_text())
    p = spec["params"]
    model = BeatMLP(
        spec["n_features"], hidden=tuple(p["hidden"]), dropout=float(p.get("dropout", 0.1))
    )
    model.load_state_dict(
        torch.load(run_dir / "checkpoint.pt", map_location="cpu", weights_only=True)
    )
    return model.eval(), run_dir, spec


def _end_to_end(
    feats: dict[str, dict[str, np.ndarray]], preds: dict[str, np.ndarray]
) -> dict[str, Any]:
    """Figures counting the detector too: reference beats never detected are false negatives of their
    class, detections matching no reference beat labelled V or S are false positives."""
    out: dict[str, Any] = {}
    for key, c in (("veb", 2), ("sveb", 1)):
        tp = fp = ref = 0
        for r, d in feats.items():
            lab, pr = d["label"], preds[r]
            tp += int(np.sum((lab == c) & (pr == c)))
            fp += int(np.sum((lab != c) & (pr == c)))
            ref += int(d["ref_counts"][c])
        out[f"{key}.se"] = round(100.0 * tp / ref, 2) if ref else None
        out[f"{key}.ppv"] = round(100.0 * tp / (tp + fp), 2) if tp + fp else None
    out["unmatched_detections"] = int(sum(int(np.sum(d["symbol"] == "")) for d in feats.values()))
    out["reference_beats"] = int(sum(int(d["ref_counts"].sum()) for d in feats.values()))
    return out


def ds2_figures(ctx: TaskContext, classify: Any) -> dict[str, Any]:
    """DS2 figures of ``classify(x) -> labels (str)``: the replay of DS2 (cached), matched beats."""
    feats = record_features(ctx, _ctx_records(ctx, MITDB_DS2))
    preds = {r: np.array([CLASSES.index(s) for s in classify(d["x"])]) for r, d in feats.items()}
    ys = np.concatenate([d["label"][d["label"] >= 0] for d in feats.values()])
    ps = np.concatenate([preds[r][feats[r]["label"] >= 0] for r in feats])
    res = figures(ys, ps)
    res["protocol"] = (
        f"MIT-BIH DS2 ({len(feats)} records, paced excluded), stream replay, detected beats matched to "
        "reference beats within 150 ms; gross figures over matched beats with an AAMI label"
    )
    res["with_detection"] = _end_to_end(feats, preds)
    return res


def _goals(res: dict[str, Any]) -> dict[str, bool]:
    return {k: bool(res.get(k) is not None and res[k] >= v) for k, v in GOALS.items()}


def evaluate(ctx: TaskContext) -> dict[str, Any]:
    """DS2 (held out) figures of the committed ONNX (default) or of a run's checkpoint; DS1 CV figures
    from the card (or the run)."""
    if ctx.extra.get("source", "onnx") == "checkpoint":
        model, run_dir, spec = _load_run(ctx)
        w = np.array(spec["class_weights"])

        def classify(x: np.ndarray) -> np.ndarray:
            return np.asarray(CLASSES)[(predict(model, x) * w).argmax(axis=1)]

        ds1 = json.loads((run_dir / "metrics.json").read_text())["ds1_cv"]
        src: dict[str, Any] = {"source": "checkpoint", "run_dir": str(run_dir)}
    else:
        from models.runtime.beat_class import BeatClassifier

        clf = BeatClassifier.load(models_dir=ctx.artifacts_dir)

        def classify(x: np.ndarray) -> np.ndarray:
            return clf.classify(x)[0]

        ds1 = clf.card.metrics.get("ds1_cv")
        src = {"source": "onnx", "onnx_sha256": clf.card.onnx_sha256}
    res = ds2_figures(ctx, classify)
    return {
        "model": NAME,
        **{k: res[k] for k in ("veb.se", "veb.ppv", "sveb.se", "sveb.ppv")},
        "ds2": res,
        "ds1_cv": ds1,
        "goals": GOALS,
        "goals_met": _goals(res),
        "published": PUBLISHED,
        **src,
    }


def export(ctx: TaskContext) -> Path:
    """ONNX + card from the latest run; the card's metrics hold the DS1 CV figures and the DS2 figures
    of the exported graph (computed once here, never used to choose anything)."""
    from models.export import export_with_card
    from models.preprocessing.beatfeatures import FEATURE_NAMES
    from models.runtime.beat_class import BeatClassifier

    model, run_dir, spec = _load_run(ctx)
    run_metrics = json.loads((run_dir / "metrics.json").read_text())
    feats = record_features(ctx, _ctx_records(ctx, MITDB_DS1))
    x, _, _ = dataset(feats)
    sample = x[np.random.default_rng(0).choice(len(x), size=min(2000, len(x)), replace=False)]
    path = Path(ctx.artifacts_dir) / f"{NAME}.onnx"
    w = [float(v) for v in spec["class_weights"]]
    rule = "label = classes[argmax(probs * class_weights)]"
    export_with_card(
        model,
        path,
        {"features": sample},
        ["probs"],
        {
            "task": "AAMI EC57 beat classification (N, S, V, F, Q) of stream beats from patient-relative "
            "RR, morphology, CAE and beat-VAE features",
            "input": {
                "features": f"[B,{len(FEATURE_NAMES)}] models.preprocessing.beatfeatures.featurize "
                "(stream.stages.beatclass.BeatClassStage), raw; standardised inside the graph"
            },
            "outputs_doc": {"probs": "[B,5] softmax in `classes` order"},
            "normalisation": {
                "method": "standardise",
                "description": "(x - training mean) / training std, then the unused features zeroed "
                "(graph buffers mean, std, mask)",
            },
            "preprocessing": "beat_720 windows (band-passed QRS lead, R centred) joined with the beat's "
            "beat_400 cycle; cae and beat_vae scores; per-stream RR averages and dominant-beat template "
            "(models.preprocessing.beatfeatures)",
            "feature_names": list(FEATURE_NAMES),
            "classes": list(CLASSES),
            "decision": {"rule": rule, "class_weights": w},
            "threshold": {
                "value": None,
                "rule": f"{rule}, class_weights {w} tuned on DS1 leave-records-out CV out-of-fold "
                "predictions (maximise F1(S) + F1(V) + F1(F)); no DS2 data used",
            },
            "scoring_models": list(SCORING_MODELS),
            "metrics": {"ds1_cv": run_metrics["ds1_cv"]},
            "training_data": {
                "dataset": "MIT-BIH Arrhythmia (mitdb), 360 Hz, stream replay",
                "split": "inter-patient (de Chazal 2004): trained and selected on DS1, tested on DS2; "
                f"paced records {list(MITDB_PACED)} excluded",
                "ds1": run_metrics["records"],
                "ds2": [r for r in MITDB_DS2 if r not in MITDB_PACED],
                "ds1_beats": run_metrics["ds1_beats"],
            },
            "selection": run_metrics["selected"],
            "published": PUBLISHED,
            "goals": GOALS,
            "run_dir": str(run_dir),
            "command": ctx.command,
        },
        contract=CARDS[NAME],
    )
    clf = BeatClassifier(path)
    ds2 = ds2_figures(ctx, lambda a: clf.classify(a)[0])
    card_file = path.with_name(f"{NAME}.card.json")
    raw = json.loads(card_file.read_text())
    raw["metrics"]["ds2"] = ds2
    raw["metrics"]["goals_met_ds2"] = _goals(ds2)
    card_file.write_text(json.dumps(raw, indent=2) + "\n")
    BeatClassifier(path)  # the card still parses and matches the ONNX
    return path


def report(ctx: TaskContext) -> dict[str, Any]:
    """The committed card's metrics."""
    from models.card import load_card

    card = load_card(Path(ctx.artifacts_dir) / f"{NAME}.card.json")
    return {"model": NAME, "metrics": card.metrics, "decision": card.get("decision")}


SPEC = ModelSpec(
    name=NAME,
    description="AAMI beat classifier (N/S/V/F/Q) on stream features, MIT-BIH DS1 -> DS2",
    prepare=prepare,
    train=train,
    evaluate=evaluate,
    export=export,
    report=report,
    cards=CARDS,
)
