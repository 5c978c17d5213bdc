"""LSTM-AE: recovery of masked (missing) ECG samples on MIT-BIH, evaluated on held-out patients.

Two protocols, same code, patient-wise split (DS1 minus paced/201 -> train + validation records; DS2 -> test):

- ``seed``: beats built like the Kaggle heartbeat set (filtered lead resampled to 125 Hz, 10 s windows
  min-max normalised to [0, 1], signal from each R peak for 1.2 median RR zero-padded to 187 samples);
  the seed's evaluation mask, samples [100, 137) set to zero. Artifact ``lstm_ae_seed.onnx``.
- ``seed_pooled``: the seed's own split as well: the same 187-sample beats of all 48 records mixed and split
  at random 70/15/15 (beats of one patient in train and test, as in the Kaggle set the seed used; optimistic,
  reported beside the patient-wise figure). Artifact ``lstm_ae_seed_pooled.onnx``.
- ``stream``: 2 s segments at 360 Hz (the stream's rate, filtered with the stream's causal filter) at random
  positions, one contiguous gap of 0.1-0.8 s at a random position. Artifact ``lstm_ae.onnx`` (the stream's).

The models train on random contiguous masks of 5-40 % of the segment (``seed_pooled`` also puts the seed's
fixed mask on a configured fraction of its training segments, ``train_eval_mask_fraction``, as the seed's
own model was trained for that one mask). Figures on the masked samples only:
RMSE and Pearson r, against zero fill, linear interpolation, cubic spline and the seed's LSTM autoencoder.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
from scipy.interpolate import CubicSpline

from models.card import BEAT_720, WindowSpec
from models.card import contract as card_contract
from training.errors import ConfigError
from training.registry import ModelSpec, TaskContext
from training.splits import mitdb_inter_patient

PROTOCOLS = ("seed", "seed_pooled", "stream")
ARTIFACTS = {"seed": "lstm_ae_seed", "seed_pooled": "lstm_ae_seed_pooled", "stream": "lstm_ae"}
#: the seed protocols' 1.5 s beats at 125 Hz (offline comparison with the seed, not cut by the stream)
SEED_BEAT = WindowSpec(name="seed_beat_187", kind="beat", fs=125.0, samples=187, damaged=True)
#: the typed card contract of each artifact (the stream fills beat_720 windows with ``lstm_ae``)
CARDS = {
    "lstm_ae": card_contract(
        "recoverer", "gap_filler", BEAT_720, {"method": "observed_zscore", "where": "runtime"}
    ),
    "lstm_ae_seed": card_contract(
        "recoverer", "gap_filler", SEED_BEAT, {"method": "none", "where": "runtime"}
    ),
    "lstm_ae_seed_pooled": card_contract(
        "recoverer", "gap_filler", SEED_BEAT, {"method": "none", "where": "runtime"}
    ),
}
SECTIONS = {
    "seed": "seed_protocol",
    "seed_pooled": "seed_pooled_protocol",
    "stream": "stream_protocol",
}
NORMALISATION = {"seed": "none", "seed_pooled": "none", "stream": "observed_zscore"}
SEED_MASKED = ("seed", "seed_pooled")  # protocols evaluated with the seed's fixed mask


# ----------------------------------------------------------------------------- data and masks
def record_split(cfg: dict[str, Any]) -> dict[str, list[str]]:
    """Patient-wise record split (DS1 -> train/val, DS2 -> test), optionally restricted to ``cfg["records"]``."""
    return mitdb_inter_patient(
        int(cfg["n_val_records"]), int(cfg["seed"]), available=cfg.get("records")
    )


def _protocols(cfg: dict[str, Any]) -> list[str]:
    from training.config import selected_protocols

    return selected_protocols(cfg, PROTOCOLS, "LSTM-AE")


def pooled_split(n: int, fractions: list[float], seed: int) -> dict[str, np.ndarray]:
    """The seed's random beat split: indices of train/val/test (beats of one patient in several splits)."""
    perm = np.random.default_rng(seed).permutation(n)
    n_tr, n_va = int(fractions[0] * n), int(fractions[1] * n)
    return {
        "train": np.sort(perm[:n_tr]),
        "val": np.sort(perm[n_tr : n_tr + n_va]),
        "test": np.sort(perm[n_tr + n_va :]),
    }


def load_protocol(ctx: TaskContext, cfg: dict[str, Any], protocol: str) -> dict[str, np.ndarray]:
    """Segments of every split: ``{"train": [n, L], "val": ..., "test": ...}`` in native units."""
    from stream.records import mitdb_records
    from training.datasets.mitdb import load_seed_beats, load_segments

    split = record_split(cfg)
    records = sorted({r for v in split.values() for r in v})
    p = cfg[SECTIONS[protocol]]
    if protocol == "seed_pooled":
        every = sorted(cfg.get("records") or mitdb_records(ctx.data_dir))
        arr = load_seed_beats(
            ctx.data_dir, ctx.cache_dir, every, float(p["fs"]), int(p["length"]), ctx.progress
        )
        idx = pooled_split(arr["segments"].shape[0], list(p["pooled_fractions"]), int(cfg["seed"]))
        out = {k: arr["segments"][v] for k, v in idx.items()}
        out["test"] = _subsample(out["test"], int(p["max_test_segments"]), int(cfg["seed"]) + 3)
        return out
    if protocol == "seed":
        arr = load_seed_beats(
            ctx.data_dir, ctx.cache_dir, records, float(p["fs"]), int(p["length"]), ctx.progress
        )
    elif protocol == "stream":
        arr = load_segments(
            ctx.data_dir,
            ctx.cache_dir,
            records,
            float(p["fs"]),
            int(p["length"]),
            int(p["segments_per_record"]),
            int(cfg["seed"]),
            ctx.progress,
        )
    else:
        raise ConfigError(f"unknown protocol {protocol!r}")
    out = {k: arr["segments"][np.isin(arr["record"], v)] for k, v in split.items()}
    # a seeded subsample of the test patients' segments keeps evaluation within the CPU budget
    out["test"] = _subsample(out["test"], int(p["max_test_segments"]), int(cfg["seed"]) + 3)
    return out


def random_masks(
    n: int, length: int, min_len: int, max_len: int, rng: np.random.Generator, margin: int = 1
) -> np.ndarray:
    """``[n, length]`` float32 masks, each one contiguous gap of ``min_len..max_len`` samples (1 = missing)."""
    lens = rng.integers(min_len, max_len + 1, size=n)
    starts = rng.integers(margin, length - margin - lens + 1)
    ar = np.arange(length)[None, :]
    return ((ar >= starts[:, None]) & (ar < (starts + lens)[:, None])).astype(np.float32)


def eval_masks(cfg: dict[str, Any], protocol: str, n: int) -> np.ndarray:
    """The fixed evaluation masks: the seed's [100, 137) or seeded random 0.1-0.8 s gaps."""
    p = cfg[SECTIONS[protocol]]
    length = int(p["length"])
    if protocol in SEED_MASKED:
        m = np.zeros((n, length), np.float32)
        m[:, int(p["mask_start"]) : int(p["mask_stop"])] = 1.0
        return m
    rng = np.random.default_rng(int(cfg["eval_masks_seed"]))
    fs = float(p["fs"])
    return random_masks(
        n,
        length,
        round(float(p["min_gap_s"]) * fs),
        round(float(p["max_gap_s"]) * fs),
        rng,
        margin=16,
    )


def train_gap_range(cfg: dict[str, Any], protocol: str) -> tuple[int, int]:
    length = int(cfg[SECTIONS[protocol]]["length"])
    return max(1, round(float(cfg["min_gap_fraction"]) * length)), round(
        float(cfg["max_gap_fraction"]) * length
    )


def _subsample(x: np.ndarray, n: int, seed: int) -> np.ndarray:
    if x.shape[0] <= n:
        return x
    idx = np.sort(np.random.default_rng(seed).choice(x.shape[0], n, replace=False))
    return x[idx]


class MaskedBatches:
    """Re-iterable batches ``(z, mask, target)`` with fresh random masks each epoch (or fixed ``masks``)."""

    def __init__(
        self,
        x: np.ndarray,
        batch: int,
        method: str,
        eps: float,
        rng: np.random.Generator,
        gap: tuple[int, int],
        masks: np.ndarray | None = None,
        shuffle: bool = True,
        identity: bool = False,
        fixed_mask: np.ndarray | None = None,
        fixed_fraction: float = 0.0,
    ) -> None:
        self.x, self.batch, self.method, self.eps, self.rng, self.gap = (
            x,
            batch,
            method,
            eps,
            rng,
            gap,
        )
        self.masks, self.shuffle, self.identity = masks, shuffle, identity
        self.fixed_mask, self.fixed_fraction = fixed_mask, fixed_fraction

    def __len__(self) -> int:
        return (self.x.shape[0] + self.batch - 1) // self.batch

    def __iter__(self) -> Iterator[tuple[Any, Any, Any]]:
        import torch

        from models.runtime.lstm_ae import normalise_observed

        order = (
            self.rng.permutation(self.x.shape[0]) if self.shuffle else np.arange(self.x.shape[0])
        )
        for s in range(0, order.size, self.batch):
            idx = order[s : s + self.batch]
            x = self.x[idx]
            if self.identity:  # the seed's training: reconstruct the unmasked input
                m = np.zeros_like(x)
            elif self.masks is not None:
                m = self.masks[idx]
            else:
                m = random_masks(x.shape[0], x.shape[1], self.gap[0], self.gap[1], self.rng)
                if (
                    self.fixed_mask is not None and self.fixed_fraction > 0
                ):  # some rows get the evaluation mask
                    m[self.rng.random(x.shape[0]) < self.fixed_fraction] = self.fixed_mask
            z, mean, scale = normalise_observed(x, m, self.method, self.eps)
            target = ((x - mean) / scale).astype(np.float32)
            yield torch.from_numpy(z), torch.from_numpy(m), torch.from_numpy(target)


# ----------------------------------------------------------------------------- methods and metrics
def linear_fill(x: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Linear interpolation across each gap from the observed samples."""
    out = x.copy()
    ar = np.arange(x.shape[1])
    for i in range(x.shape[0]):
        g = mask[i] > 0
        out[i, g] = np.interp(ar[g], ar[~g], x[i, ~g])
    return out


def spline_fill(x: np.ndarray, mask: np.ndarray, knots: int = 20) -> np.ndarray:
    """Cubic spline (scipy CubicSpline) through ``knots`` observed samples on each side of the gap."""
    out = x.copy()
    n = x.shape[1]
    for i in range(x.shape[0]):
        gi = np.flatnonzero(mask[i] > 0)
        a, b = gi[0], gi[-1] + 1
        kn = np.r_[np.arange(max(0, a - knots), a), np.arange(b, min(n, b + knots))]
        out[i, gi] = CubicSpline(kn, x[i, kn])(gi)
    return out


def gap_metrics(truth: np.ndarray, rec: np.ndarray, mask: np.ndarray) -> dict[str, Any]:
    """RMSE (mean of per-segment RMSE, and pooled) and Pearson r (mean per segment) on masked samples only."""
    m = mask > 0
    err2 = np.where(m, (rec - truth) ** 2, 0.0)
    n = m.sum(axis=1)
    per_rmse = np.sqrt(err2.sum(axis=1) / np.maximum(n, 1))
    rs = []
    for i in range(truth.shape[0]):
        t, r = truth[i, m[i]], rec[i, m[i]]
        if t.std() > 1e-9 and r.std() > 1e-9:
            rs.append(float(np.corrcoef(t, r)[0, 1]))
    return {
        "rmse": float(per_rmse.mean()),
        "rmse_median": float(np.median(per_rmse)),
        "rmse_pooled": float(np.sqrt(err2.sum() / max(int(n.sum()), 1))),
        "pearson_r": float(np.mean(rs)) if rs else None,
        "pearson_r_defined_in": len(rs),
        "segments": int(truth.shape[0]),
    }


def baseline_figures(
    truth: np.ndarray, mask: np.ndarray, knots: int
) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    obs = np.where(mask > 0, 0.0, truth).astype(np.float32)
    recs = {
        "zero_fill": obs,
        "linear": linear_fill(obs, mask),
        "cubic_spline": spline_fill(obs, mask, knots),
    }
    return {k: gap_metrics(truth, v, mask) for k, v in recs.items()}, recs


def with_ratios(figs: dict[str, Any], model_key: str = "model") -> dict[str, Any]:
    lin = figs["linear"]["rmse"]
    figs["rmse_ratio_to_linear"] = figs[model_key]["rmse"] / lin if lin > 0 else None
    others = [k for k in ("zero_fill", "linear", "cubic_spline", "seed_lstm_ae") if k in figs]
    figs["beats_every_baseline"] = all(figs[model_key]["rmse"] < figs[k]["rmse"] for k in others)
    return figs


# ----------------------------------------------------------------------------- downstream check
#: issue 17 item 5: the restated goals, and the downstream (PulseImpute-style) R-peak check
GOALS = {
    "seed_protocol_ratio_to_linear_at_most": 0.85,
    "stream_protocol_ratio_to_linear_at_most": 0.7,
    "downstream_r_peak_f1_at_least": 0.95,
}
DOWNSTREAM = {
    "block_s": 12.0,
    "warmup_s": 10.0,
    "tolerance_s": 0.15,
    "max_gaps_per_record": 150,
}


def match_peaks(ref: np.ndarray, test: np.ndarray, tol: int) -> tuple[np.ndarray, np.ndarray]:
    """One-to-one matching of two sorted peak lists within ``tol`` samples, closest pairs first.

    Returns boolean arrays ``(ref_matched, test_matched)``."""
    ref = np.asarray(ref, dtype=np.int64)
    test = np.asarray(test, dtype=np.int64)
    pairs = []
    for i, r in enumerate(ref):
        lo, hi = np.searchsorted(test, [r - tol, r + tol + 1])
        pairs += [(abs(int(test[j]) - int(r)), i, j) for j in range(lo, hi)]
    rm, tm = np.zeros(ref.size, bool), np.zeros(test.size, bool)
    for _, i, j in sorted(pairs):
        if not rm[i] and not tm[j]:
            rm[i] = tm[j] = True
    return rm, tm


def peak_f1(
    ref: np.ndarray, test: np.ndarray, spans: list[tuple[int, int]] | np.ndarray, tol: int
) -> dict[str, Any]:
    """Detection agreement inside ``spans`` (``[start, stop)`` sample ranges): ``ref`` the peaks found in the
    original signal, ``test`` those found in the recovered one, matched one-to-one within ``tol`` samples
    over the whole record. TP / FN: reference peaks inside a span, matched or not; FP: test peaks inside
    a span without a match. Se = TP / (TP + FN), PPV = TP / (TP + FP), F1 their harmonic mean (1.0 when
    the spans hold no peak in either signal)."""
    ref = np.sort(np.asarray(ref, dtype=np.int64))
    test = np.sort(np.asarray(test, dtype=np.int64))
    rm, tm = match_peaks(ref, test, tol)

    def inside(p: np.ndarray) -> np.ndarray:
        out = np.zeros(p.size, bool)
        for a, b in spans:
            out |= (p >= a) & (p < b)
        return out

    ri, ti = inside(ref), inside(test)
    tp, fn, fp = int((ri & rm).sum()), int((ri & ~rm).sum()), int((ti & ~tm).sum())
    se = tp / (tp + fn) if tp + fn else 1.0
    ppv = tp / (tp + fp) if tp + fp else 1.0
    f1 = 2 * tp / (2 * tp + fp + fn) if tp + fp + fn else 1.0
    return {"tp": tp, "fp": fp, "fn": fn, "se": se, "ppv": ppv, "f1": f1}


def downstream_gaps(
    n: int,
    fs: float,
    length: int,
    gap: tuple[int, int],
    rng: np.random.Generator,
    dcfg: dict[str, Any],
) -> np.ndarray:
    """``[k, 3]`` (window start, gap start, gap stop) in samples of a record of ``n`` samples: one window of
    ``length`` samples in each ``block_s`` block after ``warmup_s`` (blocks in a seeded random subset of at
    most ``max_gaps_per_record``), its gap of ``gap`` samples at a random position (16-sample margins, as
    :func:`eval_masks`)."""
    block = round(float(dcfg["block_s"]) * fs)
    starts = np.arange(round(float(dcfg["warmup_s"]) * fs), n - block + 1, block)
    keep = int(dcfg["max_gaps_per_record"])
    if starts.size > keep:
        starts = np.sort(rng.choice(starts, keep, replace=False))
    out = []
    for b in starts:
        w = int(b + rng.integers(0, block - length + 1))
        g = int(rng.integers(gap[0], gap[1] + 1))
        s = int(rng.integers(16, length - 16 - g + 1))
        out.append((w, w + s, w + s + g))
    return np.asarray(out, dtype=np.int64).reshape(-1, 3)


def downstream_figures(
    data_dir: Path,
    records: list[str],
    fill: Any,
    cfg: dict[str, Any],
    progress: bool = False,
) -> dict[str, Any]:
    """The stream's R-peak detector (:func:`stream.stages.qrs.detect_qrs`, causal, 1 s chunks) on whole
    test records whose gaps were filled by ``fill`` (``[k, L]`` segments with NaN gaps -> filled) and by
    linear interpolation, against the same detector on the original record (see :func:`peak_f1`);
    RMSE on the filled samples beside it."""
    from tqdm.auto import tqdm

    from stream.stages.qrs import detect_qrs
    from training.datasets.mitdb import record_lead

    p = cfg["stream_protocol"]
    dcfg = {**DOWNSTREAM, **cfg.get("downstream", {})}
    fs, length = float(p["fs"]), int(p["length"])
    gap = (round(float(p["min_gap_s"]) * fs), round(float(p["max_gap_s"]) * fs))
    tol = round(float(dcfg["tolerance_s"]) * fs)
    counts = {k: {"tp": 0, "fp": 0, "fn": 0} for k in ("model", "linear")}
    counts_w = {k: {"tp": 0, "fp": 0, "fn": 0} for k in ("model", "linear")}
    err2 = {"model": 0.0, "linear": 0.0}
    amp: dict[str, list[float]] = {"model": [], "linear": []}
    n_gap, n_win, n_ref = 0, 0, 0
    for r in tqdm(records, desc="lstm_ae downstream", disable=not progress, unit="record"):
        x, src_fs, _ = record_lead(Path(data_dir), r)
        if abs(src_fs - fs) > 1e-9:
            raise ConfigError(f"record {r} is at {src_fs} Hz, the model at {fs} Hz")
        rng = np.random.default_rng([int(cfg["eval_masks_seed"]), int(r)])
        g = downstream_gaps(x.size, fs, length, gap, rng, dcfg)
        if not len(g):
            continue
        segs = np.stack([x[w : w + length] for w in g[:, 0]]).astype(np.float32)
        mask = np.zeros_like(segs)
        for i, (w, a, b) in enumerate(g):
            mask[i, a - w : b - w] = 1.0
        holed = np.where(mask > 0, np.nan, segs).astype(np.float32)
        filled = {"model": fill(holed), "linear": linear_fill(np.nan_to_num(holed), mask)}
        ref = detect_qrs(x, fs)
        gaps = [(int(a), int(b)) for _, a, b in g]
        wins = [(int(w), int(w) + length) for w, _, _ in g]
        n_ref += int(sum(((ref >= a) & (ref < b)).sum() for a, b in gaps))
        for k, segs_k in filled.items():
            y = x.copy()
            for i, (w, a, b) in enumerate(g):
                y[a:b] = segs_k[i, a - w : b - w]
                err2[k] += float(((segs_k[i] - segs[i]) ** 2 * mask[i]).sum())
            for (
                a,
                b,
            ) in gaps:  # |peak| of the filled signal near each reference R peak, over the true one
                for q in ref[(ref >= a) & (ref < b)]:
                    lo, hi = max(int(q) - tol, 0), min(int(q) + tol + 1, x.size)
                    true = float(np.abs(x[lo:hi]).max())
                    if true > 0:
                        amp[k].append(float(np.abs(y[lo:hi]).max()) / true)
            det = detect_qrs(y, fs)
            for acc, spans in ((counts[k], gaps), (counts_w[k], wins)):
                f = peak_f1(ref, det, spans, tol)
                for c in ("tp", "fp", "fn"):
                    acc[c] += f[c]
        n_gap += int(mask.sum())
        n_win += len(g)

    def summary(c: dict[str, int]) -> dict[str, Any]:
        tp, fp, fn = c["tp"], c["fp"], c["fn"]
        return {
            **c,
            "se": tp / (tp + fn) if tp + fn else 1.0,
            "ppv": tp / (tp + fp) if tp + fp else 1.0,
            "f1": 2 * tp / (2 * tp + fp + fn) if tp + fp + fn else 1.0,
        }

    rmse = {k: float(np.sqrt(v / max(n_gap, 1))) for k, v in err2.items()}
    return {
        "protocol": f"{len(records)} test records (MLII, the stream's causal band-pass, {fs:g} Hz); after "
        f"{dcfg['warmup_s']} s, one {length}-sample window per {dcfg['block_s']} s block (at most "
        f"{dcfg['max_gaps_per_record']} per record, seed eval_masks_seed + record) with one gap of "
        f"{p['min_gap_s']}-{p['max_gap_s']} s; each gap filled from its own window (as the stream fills a "
        "beat_720 window); stream.stages.qrs.detect_qrs (causal, 1 s chunks) on the whole original, "
        f"model-filled and linearly filled records; peaks matched one-to-one within {dcfg['tolerance_s']} s; "
        "counts over the peaks inside the gaps (in_gaps, the goal) and inside the 2 s windows (in_windows)",
        "windows": n_win,
        "reference_peaks_in_gaps": n_ref,
        "in_gaps": {k: summary(v) for k, v in counts.items()},
        "in_windows": {k: summary(v) for k, v in counts_w.items()},
        "r_amplitude_ratio_median": {k: float(np.median(v)) if v else None for k, v in amp.items()},
        "r_amplitude_ratio_note": "max |filled| / max |original| within the tolerance of each reference "
        "peak inside a gap (1 = the R wave is recovered at full height)",
        "rmse_pooled": rmse,
        "rmse_ratio_to_linear": rmse["model"] / rmse["linear"] if rmse["linear"] > 0 else None,
    }


# ----------------------------------------------------------------------------- task callables
def build_model(cfg: dict[str, Any], protocol: str) -> Any:
    from models.lstm_ae import MaskedRecoveryNet

    m = cfg[SECTIONS[protocol]]["model"]
    return MaskedRecoveryNet(
        int(m["channels"]),
        int(m["hidden"]),
        int(m["layers"]),
        int(m["kernel"]),
        int(m["down"]),
        int(m["head_channels"]),
    )


def _torch_recover(
    model: Any, x: np.ndarray, mask: np.ndarray, method: str, eps: float
) -> np.ndarray:
    from models.runtime.lstm_ae import normalise_observed
    from training.trainer import predict_batches

    z, mean, scale = normalise_observed(x, mask, method, eps)
    y = predict_batches(model.eval(), (z, mask), batch=512)[0]  # on the model's device
    return np.where(mask > 0, y * scale + mean, x).astype(np.float32)


def _negative_masked_rmse(
    model: Any, x: np.ndarray, mask: np.ndarray, method: str, eps: float
) -> float:
    """Minus the masked-sample RMSE of ``model`` on ``x`` (a ``select_fn`` for :func:`training.trainer.fit`)."""
    return -float(gap_metrics(x, _torch_recover(model, x, mask, method, eps), mask)["rmse"])


def prepare(ctx: TaskContext) -> dict[str, Any]:
    """Build/cache both protocols' segments; summarise counts per split."""
    out: dict[str, Any] = {"records": record_split(ctx.config)}
    for p in _protocols(ctx.config):
        data = load_protocol(ctx, ctx.config, p)
        out[p] = {k: list(v.shape) for k, v in data.items()}
    return out


def _masked_loss(model: Any, batch: Any) -> Any:
    z, m, target = batch
    out = model(z, m)
    return ((out - target) ** 2 * m).sum() / m.sum().clamp_min(1.0)


def _identity_loss(model: Any, batch: Any) -> Any:
    z, m, target = batch
    return ((model(z, m) - target) ** 2).mean()


def _plot_examples(
    path: Path,
    truth: np.ndarray,
    mask: np.ndarray,
    recs: dict[str, np.ndarray],
    fs: float,
    title: str,
) -> None:
    from training.plots import plot_signals

    rows, spans = [], []
    for i in range(min(4, truth.shape[0])):
        gi = np.flatnonzero(mask[i] > 0)
        rows.append(
            {
                "original": truth[i],
                "masked input": np.where(mask[i] > 0, np.nan, truth[i]),
                **{k: np.where(mask[i] > 0, v[i], np.nan) for k, v in recs.items()},
            }
        )
        spans.append((int(gi[0]), int(gi[-1]) + 1))
    plot_signals(rows, path, fs, spans, title)


def train(ctx: TaskContext) -> Path:
    """Train the recovery model of each protocol, and the seed's LSTM-AE baseline; evaluate on test patients."""

    from models.lstm_ae import SeedLSTMAE
    from training.trainer import (
        FitConfig,
        count_parameters,
        fit,
        seed_everything,
        select_device,
        start_run,
        write_json,
    )

    cfg = ctx.config
    run_dir = start_run(ctx, "lstm_ae")
    device = select_device(ctx.device)
    summary: dict[str, Any] = {}
    eps = float(cfg["eps"])
    for protocol in _protocols(cfg):
        seed = int(cfg["seed"])
        seed_everything(seed)
        sub = run_dir / protocol
        sub.mkdir()
        p = cfg[SECTIONS[protocol]]
        data = load_protocol(ctx, cfg, protocol)
        method = NORMALISATION[protocol]
        x_tr = _subsample(data["train"], int(p["max_train_segments"]), seed)
        x_va = _subsample(data["val"], int(p["max_val_segments"]), seed + 1)
        gap = train_gap_range(cfg, protocol)
        va_masks = random_masks(
            x_va.shape[0], x_va.shape[1], gap[0], gap[1], np.random.default_rng(seed + 2)
        )
        bs = int(p["train"]["batch_size"])
        fixed_fraction = float(p.get("train_eval_mask_fraction", 0.0))
        tr_b = MaskedBatches(
            x_tr,
            bs,
            method,
            eps,
            np.random.default_rng(seed),
            gap,
            fixed_mask=eval_masks(cfg, protocol, 1)[0],
            fixed_fraction=fixed_fraction,
        )
        va_b = MaskedBatches(
            x_va, 512, method, eps, np.random.default_rng(seed), gap, masks=va_masks, shuffle=False
        )
        model = build_model(cfg, protocol)
        if cfg.get(
            "init_from"
        ):  # continue an earlier run's training (its checkpoint of this protocol)
            import torch

            src = Path(cfg["init_from"]) / protocol / "checkpoint.pt"
            if not src.is_file():
                raise ConfigError(f"init_from: {src} does not exist")
            model.load_state_dict(torch.load(src, map_location="cpu", weights_only=True))
        select_fn = None
        if (
            p["train"].get("select_on") == "val_fixed_mask_rmse"
        ):  # checkpoint = best RMSE on the evaluation mask (validation)
            select_fn = partial(
                _negative_masked_rmse,
                x=x_va,
                mask=eval_masks(cfg, protocol, x_va.shape[0]),
                method=method,
                eps=eps,
            )
        res = fit(
            model,
            tr_b,
            va_b,
            _masked_loss,
            FitConfig.from_dict(p["train"]),
            sub,
            device,
            ctx.progress,
            desc=f"lstm_ae[{protocol}]",
            select_fn=select_fn,
        )
        model.cpu().eval()
        val_fixed: dict[str, Any] = {}
        if (
            protocol in SEED_MASKED
        ):  # the evaluation mask on the validation segments (what select_on reads)
            vm = eval_masks(cfg, protocol, x_va.shape[0])
            vfig = {
                "model": gap_metrics(x_va, _torch_recover(model, x_va, vm, method, eps), vm)[
                    "rmse"
                ],
                "linear": gap_metrics(
                    x_va, linear_fill(np.where(vm > 0, 0.0, x_va).astype(np.float32), vm), vm
                )["rmse"],
            }
            val_fixed = {
                **vfig,
                "rmse_ratio_to_linear": vfig["model"] / vfig["linear"],
                "segments": int(x_va.shape[0]),
            }
            if ctx.progress:
                print(f"lstm_ae[{protocol}] validation, evaluation mask: {json.dumps(val_fixed)}")
        test = data["test"]
        masks = eval_masks(cfg, protocol, test.shape[0])
        figs, recs = baseline_figures(test, masks, int(cfg["spline_knots_each_side"]))
        recs["model"] = _torch_recover(model, test, masks, method, eps)
        figs["model"] = gap_metrics(test, recs["model"], masks)
        seed_info: dict[str, Any] = {}
        if cfg["baseline"]["enabled"]:
            bsub = sub / "seed_lstm_ae"
            bsub.mkdir()
            seed_everything(seed)
            base = SeedLSTMAE()
            xb = _subsample(data["train"], int(cfg["baseline"]["max_train_segments"]), seed)
            b_tr = MaskedBatches(
                xb,
                int(cfg["baseline"]["train"]["batch_size"]),
                method,
                eps,
                np.random.default_rng(seed),
                gap,
                identity=True,
            )
            b_va = MaskedBatches(
                x_va,
                512,
                method,
                eps,
                np.random.default_rng(seed),
                gap,
                shuffle=False,
                identity=True,
            )
            bres = fit(
                base,
                b_tr,
                b_va,
                _identity_loss,
                FitConfig.from_dict(cfg["baseline"]["train"]),
                bsub,
                device,
                ctx.progress,
                desc=f"seed_lstm_ae[{protocol}]",
            )
            base.cpu().eval()
            recs["seed_lstm_ae"] = _torch_recover(base, test, masks, method, eps)
            figs["seed_lstm_ae"] = gap_metrics(test, recs["seed_lstm_ae"], masks)
            seed_info = {
                "parameters": count_parameters(base),
                "epochs_run": bres.epochs_run,
                "training": "reconstruction of unmasked inputs (as the seed), evaluated with the gap zeroed",
            }
        figs = with_ratios(figs)
        _plot_examples(
            sub / "recovery_examples.png",
            test,
            masks,
            {k: recs[k] for k in ("model", "linear", "seed_lstm_ae") if k in recs},
            float(p["fs"]),
            f"LSTM-AE [{protocol}] test patients",
        )
        metrics = {
            "protocol": protocol,
            "records": record_split(cfg)
            if protocol != "seed_pooled"
            else {"pooled": cfg.get("records") or "all 48"},
            "segments": {k: int(v.shape[0]) for k, v in data.items()},
            "train_segments_used": int(x_tr.shape[0]),
            "parameters": count_parameters(model),
            "fit": {k: v for k, v in res.to_dict().items() if k != "history"}
            | ({"init_from": str(cfg["init_from"])} if cfg.get("init_from") else {}),
            "seed_lstm_ae": seed_info,
            "validation_evaluation_mask": val_fixed,
            "test": figs,
        }
        write_json(sub / "metrics.json", metrics)
        summary[protocol] = {k: (v["rmse"] if isinstance(v, dict) else v) for k, v in figs.items()}
    write_json(run_dir / "metrics.json", summary)
    if not ctx.as_json:
        print(json.dumps(summary, indent=2))
    return run_dir


def _run_dir(ctx: TaskContext) -> Path:
    from training.trainer import latest_run_dir

    return ctx.run_dir or latest_run_dir(ctx.runs_dir, "lstm_ae")


def _onnx_figures(
    ctx: TaskContext,
    cfg: dict[str, Any],
    protocol: str,
    name: str,
    seed_arch: dict[str, Any] | None,
) -> dict[str, Any]:
    from models.runtime.lstm_ae import GapFiller

    data = load_protocol(ctx, cfg, protocol)
    test = data["test"]
    masks = eval_masks(cfg, protocol, test.shape[0])
    figs, _ = baseline_figures(test, masks, int(cfg["spline_knots_each_side"]))
    rec = GapFiller.load(name, ctx.artifacts_dir).predict(np.where(masks > 0, np.nan, test)).signal
    figs["model"] = gap_metrics(test, rec, masks)
    if seed_arch:
        figs["seed_lstm_ae"] = seed_arch
    return with_ratios(figs)


def export(ctx: TaskContext) -> Path:
    """Export both protocols' models to ONNX + card; test figures recomputed from the ONNX via GapFiller."""
    import torch

    from models.export import card_path_for, export_with_card

    run_dir = _run_dir(ctx)
    cfg = json.loads((run_dir / "config.json").read_text())
    ctx.artifacts_dir.mkdir(parents=True, exist_ok=True)
    last = Path()
    for protocol in [p for p in PROTOCOLS if (run_dir / p / "checkpoint.pt").is_file()]:
        sub = run_dir / protocol
        metrics = json.loads((sub / "metrics.json").read_text())
        p = cfg[SECTIONS[protocol]]
        model = build_model(cfg, protocol)
        model.load_state_dict(
            torch.load(sub / "checkpoint.pt", map_location="cpu", weights_only=True)
        )
        model.eval()
        data = load_protocol(ctx, cfg, protocol)
        from models.runtime.lstm_ae import normalise_observed

        x_va = _subsample(data["val"], 512, 7)
        gap = train_gap_range(cfg, protocol)
        m_va = random_masks(x_va.shape[0], x_va.shape[1], gap[0], gap[1], np.random.default_rng(7))
        z, _, _ = normalise_observed(x_va, m_va, NORMALISATION[protocol], float(cfg["eps"]))
        name = ARTIFACTS[protocol]
        onnx_path = ctx.artifacts_dir / f"{name}.onnx"
        fields: dict[str, Any] = {
            "description": "Masked-segment recovery: fills a contiguous gap of a single-lead ECG segment (conv + bidirectional LSTM, mask as an input channel).",
            "protocol": protocol,
            "sampling_rate_hz": float(p["fs"]),
            "segment_samples": int(p["length"]),
            "max_gap_fraction": float(cfg["max_gap_fraction"]),
            "mask_convention": "mask = 1 where samples are missing; observed samples are passed through unchanged",
            "preprocessing": "stream.stages.filtering.filter_signal (causal band-pass 0.5-40 Hz) on MLII; "
            + (
                "resampled to 125 Hz (stream.stages.segmentation.resample); Kaggle-heartbeat construction: 10 s windows min-max [0, 1], 187 samples from each R peak via beat_windows, zero after 1.2 x the window's median RR"
                if protocol in SEED_MASKED
                else "2 s windows at 360 Hz at seeded random positions via beat_windows"
            ),
            "normalisation": {
                "method": NORMALISATION[protocol],
                "eps": float(cfg["eps"]),
                "formula": "(x - mean_observed) / (std_observed + eps); output * (std_observed + eps) + mean_observed"
                if protocol == "stream"
                else "none (segments already min-max [0, 1])",
            },
            "training_data": "MIT-BIH Arrhythmia Database 1.0.0 (Moody & Mark 2001), all beat classes, "
            + (
                "train beats of the pooled split"
                if protocol == "seed_pooled"
                else "train records of the split"
            )
            + "; random contiguous masks of 5-40 % of the segment"
            + (
                f", and the seed's [100, 137) mask on {float(p.get('train_eval_mask_fraction', 0.0)):.0%} of the training segments"
                if float(p.get("train_eval_mask_fraction", 0.0)) > 0
                else ""
            ),
            "split": (
                {
                    "kind": "pooled random beat split (the seed's protocol; NOT patient-wise: beats of one patient are in train and test)",
                    "fractions": p["pooled_fractions"],
                    "records": "all 48 MIT-BIH records",
                }
                if protocol == "seed_pooled"
                else {
                    "kind": "patient-wise: de Chazal DS1 (paced and 201 excluded) -> train/validation records, DS2 -> test",
                    "records": metrics["records"],
                }
            ),
            "evaluation_masks": "samples [100, 137) zeroed (the seed's)"
            if protocol in SEED_MASKED
            else f"one gap of {p['min_gap_s']}-{p['max_gap_s']} s per segment at a random position (seed {cfg['eval_masks_seed']})",
            "threshold": None,
            "fit": metrics["fit"],
            "checkpoint_selection": "the epoch with the lowest validation RMSE on the evaluation mask"
            if p["train"].get("select_on") == "val_fixed_mask_rmse"
            else "the epoch with the lowest validation loss (random masks)",
            "validation_evaluation_mask": metrics.get("validation_evaluation_mask") or None,
            "architecture": p["model"],
            "command": ctx.command or "python -m training export lstm_ae",
            "run_dir": str(run_dir),
            "training_config": cfg,
            "split_config": {
                k: cfg.get(k)
                for k in (
                    "seed",
                    "n_val_records",
                    "records",
                    "eval_masks_seed",
                    "spline_knots_each_side",
                    "eps",
                    "min_gap_fraction",
                    "max_gap_fraction",
                )
            }
            | {SECTIONS[protocol]: p},
        }
        card = export_with_card(
            model, onnx_path, {"signal": z, "mask": m_va}, ["recovered"], fields, CARDS[name]
        )
        seed_arch = metrics["test"].get("seed_lstm_ae")
        card["metrics"] = {
            "test": _onnx_figures(ctx, cfg, protocol, name, seed_arch),
            "source": "model: ONNX Runtime via models.runtime.lstm_ae.GapFiller; seed_lstm_ae: torch, from the run",
        }
        card_path_for(onnx_path).write_text(json.dumps(card, indent=2) + "\n")
        last = onnx_path
        print(
            f"exported {onnx_path} ({card['onnx_bytes']} bytes, parity {card['parity']['max_abs_diff']:.2e}); test RMSE model {card['metrics']['test']['model']['rmse']:.4f} vs linear {card['metrics']['test']['linear']['rmse']:.4f}"
        )
    return last


def evaluate(ctx: TaskContext) -> dict[str, Any]:
    """Test figures of every protocol from the committed ONNX artifacts (baselines recomputed), the
    downstream R-peak check of the stream's model, and the goals (issue 17 item 5)."""
    from models.runtime.base import load_card
    from models.runtime.lstm_ae import GapFiller

    out: dict[str, Any] = {}
    cfgs: dict[str, dict[str, Any]] = {}
    for protocol in PROTOCOLS:
        name = ARTIFACTS[protocol]
        card_file = ctx.artifacts_dir / f"{name}.card.json"
        if not card_file.is_file():
            out[protocol] = {
                "error": f"{card_file} missing; run `python -m training train lstm_ae` then `export lstm_ae`"
            }
            continue
        card = load_card(card_file).raw
        sc = card["split_config"]
        cfg = {
            **ctx.config,
            **{k: v for k, v in sc.items() if k != SECTIONS[protocol]},
            SECTIONS[protocol]: sc[SECTIONS[protocol]],
        }
        cfgs[protocol] = cfg
        seed_arch = card["metrics"]["test"].get("seed_lstm_ae")
        out[protocol] = _onnx_figures(ctx, cfg, protocol, name, seed_arch)
    if "stream" in cfgs:
        filler = GapFiller.load(ARTIFACTS["stream"], ctx.artifacts_dir)
        out["downstream_r_peaks"] = downstream_figures(
            ctx.data_dir,
            record_split(cfgs["stream"])["test"],
            lambda holed: filler.predict(holed).signal,
            cfgs["stream"],
            ctx.progress,
        )
    out["goals"] = goal_flags(out)
    return out


def goal_flags(out: dict[str, Any]) -> dict[str, Any]:
    """The goals of issue 17 item 5 (figure, goal, met) and the earlier ones, from ``evaluate``'s figures."""

    def ratio(protocol: str) -> float | None:
        r = out.get(protocol, {}).get("rmse_ratio_to_linear")
        return None if r is None else float(r)

    def flag(value: float | None, goal: float, at_most: bool) -> dict[str, Any]:
        met = None if value is None else (value <= goal if at_most else value >= goal)
        return {"figure": value, "goal": goal, "met": met}

    ds = out.get("downstream_r_peaks", {}).get("in_gaps", {})
    f1 = ds.get("model", {}).get("f1")
    goals: dict[str, Any] = {
        "seed_protocol_ds2_rmse_ratio_to_linear": flag(
            ratio("seed"), GOALS["seed_protocol_ratio_to_linear_at_most"], True
        ),
        "stream_protocol_ds2_rmse_ratio_to_linear": flag(
            ratio("stream"), GOALS["stream_protocol_ratio_to_linear_at_most"], True
        ),
        "downstream_r_peak_f1_in_recovered_gaps": flag(
            f1, GOALS["downstream_r_peak_f1_at_least"], False
        )
        | {
            "linear_interpolation": ds.get("linear", {}).get("f1"),
            "in_the_2s_windows": {
                k: v.get("f1")
                for k, v in out.get("downstream_r_peaks", {}).get("in_windows", {}).items()
            },
        },
    }
    goals["all_met"] = all(v["met"] is True for v in goals.values() if isinstance(v, dict))
    goals["earlier"] = {
        "seed_protocol_rmse_at_most_half_of_linear": bool((ratio("seed") or 1.0) <= 0.5),
        "seed_protocol_pooled_split_rmse_at_most_half_of_linear": bool(
            (ratio("seed_pooled") or 1.0) <= 0.5
        ),
        "stream_protocol_beats_every_baseline": bool(
            out.get("stream", {}).get("beats_every_baseline")
        ),
    }
    return goals


def report(ctx: TaskContext) -> dict[str, Any]:
    """The committed cards' figures and the latest run's plots."""
    from training.registry import committed_cards, run_plots

    out: dict[str, Any] = {}
    for protocol, c in committed_cards(ctx, {p: ARTIFACTS[p] for p in PROTOCOLS}).items():
        t = c["metrics"]["test"]
        methods = {k: v for k, v in t.items() if isinstance(v, dict) and "rmse" in v}
        out[protocol] = {
            "artifact": c["onnx_file"],
            "sha256": c["onnx_sha256"],
            "parameters": c.get("parameters"),
            "rmse": {k: v["rmse"] for k, v in methods.items()},
            "pearson_r": {k: v.get("pearson_r") for k, v in methods.items()},
            "rmse_ratio_to_linear": t.get("rmse_ratio_to_linear"),
        }
    out["plots"] = run_plots(lambda: _run_dir(ctx))
    return out


SPEC = ModelSpec(
    name="lstm_ae",
    description="Masked-segment recovery (conv-BiLSTM with mask channel) on MIT-BIH; seed (125 Hz beats) and stream (2 s at 360 Hz) protocols",
    prepare=prepare,
    train=train,
    evaluate=evaluate,
    export=export,
    report=report,
    cards=CARDS,
)
