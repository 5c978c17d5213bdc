"""CAE: beat-window anomaly detection on MIT-BIH, trained on AAMI-N beats only.

Two protocols, same code:

- ``inter_patient``: de Chazal DS1 (split by record into train/validation) -> DS2 test, paced records
  excluded (and record 201, same subject as DS2's 202). Its model is the committed ``cae.onnx``.
- ``pooled``: the seed's protocol, every window of all 48 records mixed and split 70/15/15 at random
  (neighbouring, overlapping windows of one patient land in train and test: optimistic). ``cae_pooled.onnx``.

Morphology score = weighted MSE reconstruction error (centre of the window weighted up). Decision score
= log(morphology) + weight * rhythm, where rhythm (:mod:`models.preprocessing.rhythm`) is the beat's prematurity
plus compensatory pause against a causal reference interval. The reference rule (history, quantile) is
chosen by rhythm-only ROC-AUC on the protocol's train + validation beats (no model is fitted to it, and no
test beat is read), the weight and the centre weighting by ROC-AUC on the validation split, and the
threshold on the validation split (F1 by default). Positive class = abnormal (AAMI S, V, F, Q).

``init_from`` (a run directory) starts from that run's checkpoints; with ``train.epochs = 0`` a run only
re-calibrates the scoring of an earlier run's networks.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from models.card import BEAT_720
from models.card import contract as card_contract
from models.preprocessing.rhythm import grouped_rhythm_scores
from training.datasets.mitdb import BeatSet, load_beats
from training.errors import ConfigError
from training.registry import ModelSpec, TaskContext
from training.splits import mitdb_inter_patient

PROTOCOLS = ("inter_patient", "pooled")
ARTIFACTS = {"inter_patient": "cae", "pooled": "cae_pooled"}
#: the typed card contract of each artifact (the stream scores beat_720 windows with it)
CARDS = {
    name: card_contract(
        "scorer", "cae_beat", BEAT_720, {"method": "zscore", "eps": 0.05, "where": "runtime"}
    )
    for name in ARTIFACTS.values()
}
#: Figures published by the seed project (pooled 70/15/15 protocol).
SEED_FIGURES = {
    "roc_auc": 0.9721,
    "accuracy": 0.9459,
    "sensitivity": 0.9019,
    "specificity": 0.9551,
    "f1": 0.8514,
    "parameters": 583361,
    "protocol": "pooled: all windows of the 48 records mixed, random 70/15/15",
}


def split_params(cfg: dict[str, Any], protocol: str) -> dict[str, Any]:
    """What defines a protocol's split (stored in the card so evaluation rebuilds the same split)."""
    d = cfg["data"]
    return {
        "protocol": protocol,
        "seed": int(cfg["seed"]),
        "n_val_records": int(d["n_val_records"]),
        "pooled_fractions": list(d["pooled_fractions"]),
        "records": d.get("records"),
        "target_fs": float(d["target_fs"]),
        "width": int(d["width"]),
    }


def protocol_splits(
    ctx: TaskContext, params: dict[str, Any]
) -> tuple[dict[str, BeatSet], dict[str, Any]]:
    """Train/val/test beat sets of a protocol and a description of the split."""
    beats = load_beats(
        ctx.data_dir,
        ctx.cache_dir,
        params.get("records"),
        params["target_fs"],
        params["width"],
        progress=ctx.progress,
    )
    protocol = params["protocol"]
    if protocol == "inter_patient":
        split = mitdb_inter_patient(
            params["n_val_records"], params["seed"], available=np.unique(beats.record).tolist()
        )
        parts = {k: beats.of_records(v) for k, v in split.items()}
        desc: dict[str, Any] = {
            "kind": "inter-patient (de Chazal DS1 -> DS2, paced and record 201 excluded)",
            "records": split,
        }
    elif protocol == "pooled":
        fr = params["pooled_fractions"]
        perm = np.random.default_rng(params["seed"]).permutation(len(beats))
        n_tr, n_va = int(fr[0] * len(beats)), int(fr[1] * len(beats))
        parts = {
            "train": beats.subset(np.sort(perm[:n_tr])),
            "val": beats.subset(np.sort(perm[n_tr : n_tr + n_va])),
            "test": beats.subset(np.sort(perm[n_tr + n_va :])),
        }
        desc = {
            "kind": "pooled random window split (seed protocol; not patient-wise)",
            "fractions": fr,
            "records": sorted(np.unique(beats.record).tolist()),
        }
    else:
        raise ConfigError(f"unknown CAE protocol {protocol!r}; use {PROTOCOLS}")
    desc["windows"] = {k: {c: int((v.aami == c).sum()) for c in "NSVFQ"} for k, v in parts.items()}
    parts["all"] = beats  # every beat of the records: the rhythm context of each part's beats
    return parts, desc


def _normalise(cfg: dict[str, Any], windows: np.ndarray) -> np.ndarray:
    from models.runtime.cae import normalise_windows

    return normalise_windows(windows, cfg["data"]["normalisation"], float(cfg["data"]["eps"]))


def build_model(cfg: dict[str, Any]) -> Any:
    """The torch ConvAutoencoder described by ``cfg``."""
    from models.cae import ConvAutoencoder, center_weights

    m, d = cfg["model"], cfg["data"]
    w = center_weights(
        int(d["width"]),
        float(d["target_fs"]),
        float(m["center_seconds"]),
        float(m["center_weight"]),
    )
    return ConvAutoencoder(
        int(d["width"]),
        tuple(m["channels"]),
        tuple(m["kernels"]),
        tuple(m["strides"]),
        int(m["latent"]),
        w,
        float(m.get("dropout", 0.0)),
        int(m.get("head_channels", 8)),
    )


def choose_score_weights(cfg: dict[str, Any], err2: np.ndarray, y: np.ndarray) -> dict[str, Any]:
    """Pick the centre window and weight of the score maximising ROC-AUC on validation errors ``err2`` [n, L]."""
    from sklearn.metrics import roc_auc_score

    from models.cae import center_weights

    d, grid = cfg["data"], cfg["score_grid"]
    best: dict[str, Any] = {"roc_auc": -1.0}
    for secs in grid["center_seconds"]:
        for wt in grid["center_weight"]:
            w = center_weights(int(d["width"]), float(d["target_fs"]), float(secs), float(wt))
            auc = float(roc_auc_score(y, (err2 * w).mean(axis=1)))
            if auc > best["roc_auc"]:
                best = {"roc_auc": auc, "center_seconds": float(secs), "center_weight": float(wt)}
    best["chosen_on"] = "validation ROC-AUC"
    return best


def beat_rhythm(bs: BeatSet, history: int, quantile: float, fs: float = 360.0) -> np.ndarray:
    """Rhythm score of every beat of ``bs`` (each record's beats in time order; the set may hold a subset)."""
    return grouped_rhythm_scores(bs.sample / fs, bs.record, history, quantile)


def choose_rhythm(
    cfg: dict[str, Any],
    ref_beats: BeatSet,
    val: BeatSet,
    val_morph: np.ndarray,
    rhythm_source: BeatSet,
) -> dict[str, Any]:
    """Choose the rhythm reference rule on ``ref_beats`` (train + validation) and its weight on ``val``.

    Rhythm scores are computed on ``rhythm_source`` (every beat of the protocol's records, so a beat's
    neighbours are its true neighbours) and looked up for the beats of each set.
    """
    from sklearn.metrics import roc_auc_score

    grid = cfg["rhythm_grid"]
    key = {
        (r, int(t)): i
        for i, (r, t) in enumerate(zip(rhythm_source.record, rhythm_source.sample, strict=True))
    }

    def lookup(rh: np.ndarray, bs: BeatSet) -> np.ndarray:
        return rh[[key[(r, int(t))] for r, t in zip(bs.record, bs.sample, strict=True)]]

    rule: dict[str, Any] = {"roc_auc": -1.0}
    for hist in grid["history"]:
        for q in grid["quantile"]:
            rh = beat_rhythm(rhythm_source, int(hist), float(q))
            auc = float(roc_auc_score(ref_beats.abnormal, lookup(rh, ref_beats)))
            if auc > rule["roc_auc"]:
                rule = {"roc_auc": auc, "history": int(hist), "quantile": float(q)}
    rh_val = lookup(beat_rhythm(rhythm_source, rule["history"], rule["quantile"]), val)
    lm = np.log(np.maximum(val_morph.astype(np.float64), 1e-12))
    best: dict[str, Any] = {"roc_auc": -1.0}
    for w in grid["weight"]:
        auc = float(roc_auc_score(val.abnormal, lm + float(w) * rh_val))
        if auc > best["roc_auc"]:
            best = {"roc_auc": auc, "weight": float(w)}
    return {
        "history": rule["history"],
        "quantile": rule["quantile"],
        "weight": best["weight"],
        "chosen_on": {
            "history, quantile": f"rhythm-only ROC-AUC {rule['roc_auc']:.4f} on the train + validation beats",
            "weight": f"ROC-AUC {best['roc_auc']:.4f} of the decision score on the validation split",
        },
        "validation_roc_auc_morphology_only": float(roc_auc_score(val.abnormal, lm)),
    }


def rhythm_for(bs: BeatSet, rhythm: dict[str, Any], all_beats: BeatSet) -> np.ndarray:
    """Rhythm scores of the beats of ``bs`` computed with their record's full beat sequence ``all_beats``."""
    src = all_beats.of_records(np.unique(bs.record).tolist())
    rh = beat_rhythm(src, int(rhythm["history"]), float(rhythm["quantile"]))
    key = {(r, int(t)): i for i, (r, t) in enumerate(zip(src.record, src.sample, strict=True))}
    return rh[[key[(r, int(t))] for r, t in zip(bs.record, bs.sample, strict=True)]]


def _decision(morph: np.ndarray, rhythm_scores: np.ndarray, rhythm: dict[str, Any]) -> np.ndarray:
    """log(morphology) + weight * rhythm (what :meth:`models.runtime.cae.CaeScorer.decision_scores` computes)."""
    return (
        np.log(np.maximum(np.asarray(morph, dtype=np.float64), 1e-12))
        + float(rhythm["weight"]) * rhythm_scores
    )


def _scorer_scores(scorer: Any, bs: BeatSet, all_beats: BeatSet) -> np.ndarray:
    """Decision scores of ``bs`` through the ONNX Runtime wrapper (rhythm from the beats' records when the card uses it)."""
    rh = rhythm_for(bs, scorer.rhythm.to_dict(), all_beats) if scorer.rhythm is not None else None
    return np.asarray(scorer.predict(bs.windows, rh).scores)


def _protocols(cfg: dict[str, Any]) -> list[str]:
    from training.config import selected_protocols

    return selected_protocols(cfg, PROTOCOLS, "CAE")


def prepare(ctx: TaskContext) -> dict[str, Any]:
    """Build/cache the MIT-BIH beat windows and summarise both protocols' splits."""
    out: dict[str, Any] = {}
    for p in _protocols(ctx.config):
        _, desc = protocol_splits(ctx, split_params(ctx.config, p))
        out[p] = desc
    return out


def threshold_method(cfg: dict[str, Any], protocol: str) -> str:
    """The threshold rule of a protocol: ``threshold.by_protocol[protocol]``, else ``threshold.method``."""
    return str(
        (cfg["threshold"].get("by_protocol") or {}).get(protocol, cfg["threshold"]["method"])
    )


def _report_figures(
    parts: dict[str, BeatSet], val_scores: np.ndarray, test_scores: np.ndarray, method: str
) -> dict[str, Any]:
    from training.metrics import binary_report, choose_threshold

    targets = {k: float(SEED_FIGURES[k]) for k in ("accuracy", "sensitivity", "specificity", "f1")}  # type: ignore[arg-type]
    th = choose_threshold(
        parts["val"].abnormal, val_scores, method, targets if method == "targets" else None
    )
    how = (
        "the validation operating point exceeding the seed's accuracy, sensitivity, specificity and F1 by the largest common margin (maximum F1 when none does)"
        if method == "targets"
        else f"maximise {method} on the validation split"
    )
    return {
        "threshold": {"value": th, "method": how, "rule": method, "chosen_on": "validation"},
        "validation": binary_report(parts["val"].abnormal, val_scores, th, parts["val"].aami),
        "test": binary_report(parts["test"].abnormal, test_scores, th, parts["test"].aami),
    }


def _plots(
    out_dir: Path,
    parts: dict[str, BeatSet],
    val_scores: np.ndarray,
    test_scores: np.ndarray,
    th: float,
    recon: np.ndarray | None,
    x: np.ndarray | None,
    title: str,
) -> None:
    from sklearn.metrics import roc_curve

    from training.plots import plot_roc, plot_score_hist, plot_signals

    curves = {}
    for name, bs, sc in (
        ("validation", parts["val"], val_scores),
        ("test", parts["test"], test_scores),
    ):
        fpr, tpr, _ = roc_curve(bs.abnormal, sc)
        from sklearn.metrics import roc_auc_score

        curves[name] = (fpr, tpr, float(roc_auc_score(bs.abnormal, sc)))
    plot_roc(curves, out_dir / "roc.png", f"CAE {title}")
    plot_score_hist(
        {c: test_scores[parts["test"].aami == c] for c in "NSVFQ"},
        th,
        out_dir / "scores_test.png",
        f"CAE {title}: test scores by AAMI class",
    )
    if recon is not None and x is not None:
        rows = [{"input (normalised)": x[i], "reconstruction": recon[i]} for i in range(x.shape[0])]
        plot_signals(
            rows,
            out_dir / "reconstructions.png",
            360.0,
            title=f"CAE {title}: test windows (N, S, V, F)",
        )


def train(ctx: TaskContext) -> Path:
    """Train one CAE per protocol into ``runs/cae/<stamp>/<protocol>/`` and evaluate it on its test split."""
    import torch
    from torch.utils.data import DataLoader, TensorDataset

    from training.trainer import (
        FitConfig,
        count_parameters,
        fit,
        predict_batches,
        seed_everything,
        select_device,
        start_run,
        write_json,
    )

    cfg = ctx.config
    run_dir = start_run(ctx, "cae")
    device = select_device(ctx.device)
    tcfg = cfg["train"]
    summary: dict[str, Any] = {}
    for protocol in _protocols(cfg):
        seed_everything(int(cfg["seed"]))
        sub = run_dir / protocol
        sub.mkdir()
        params = split_params(cfg, protocol)
        parts, desc = protocol_splits(ctx, params)
        rng = np.random.default_rng(int(cfg["seed"]))
        tr_idx = np.flatnonzero(parts["train"].aami == "N")
        if tr_idx.size > int(cfg["data"]["max_train_windows"]):
            tr_idx = np.sort(
                rng.choice(tr_idx, int(cfg["data"]["max_train_windows"]), replace=False)
            )
        va_idx = np.flatnonzero(parts["val"].aami == "N")
        if va_idx.size > int(cfg["data"]["max_val_loss_windows"]):
            va_idx = np.sort(
                rng.choice(va_idx, int(cfg["data"]["max_val_loss_windows"]), replace=False)
            )
        x_tr = torch.from_numpy(_normalise(cfg, parts["train"].windows[tr_idx]))
        x_va = torch.from_numpy(_normalise(cfg, parts["val"].windows[va_idx]))
        g = torch.Generator().manual_seed(int(cfg["seed"]))
        bs = int(tcfg["batch_size"])
        train_loader = DataLoader(
            TensorDataset(x_tr), batch_size=bs, shuffle=True, generator=g, drop_last=True
        )
        val_loader = DataLoader(TensorDataset(x_va), batch_size=512)
        noise = float(tcfg.get("noise_std", 0.0))
        model = build_model(cfg)

        def loss_fn(m: torch.nn.Module, batch: Any, noise: float = noise) -> torch.Tensor:
            x = batch[0]
            inp = x + noise * torch.randn_like(x) if (noise > 0 and m.training) else x
            recon, _ = m(inp)
            return torch.mean((recon - x) ** 2)

        fit_info: dict[str, Any] = {}
        if cfg.get("init_from"):
            src = Path(cfg["init_from"]) / protocol
            if not (src / "checkpoint.pt").is_file():
                raise ConfigError(f"init_from: {src / 'checkpoint.pt'} does not exist")
            model.load_state_dict(
                torch.load(src / "checkpoint.pt", map_location="cpu", weights_only=True)
            )
            fit_info["init_from"] = str(src / "checkpoint.pt")
            if (src / "metrics.json").is_file():
                fit_info["source_fit"] = json.loads((src / "metrics.json").read_text()).get("fit")
        if int(tcfg["epochs"]) > 0:
            fit_res = fit(
                model,
                train_loader,
                val_loader,
                loss_fn,
                FitConfig.from_dict(tcfg),
                sub,
                device,
                ctx.progress,
                desc=f"cae[{protocol}]",
            )
            fit_info.update({k: v for k, v in fit_res.to_dict().items() if k != "history"})
        elif not cfg.get("init_from"):
            raise ConfigError("train.epochs = 0 needs init_from (a run directory to re-calibrate)")
        model.cpu().eval()
        val_x = _normalise(cfg, parts["val"].windows)
        val_recon = predict_batches(model, (val_x,), device=torch.device("cpu"))[0]
        choice = choose_score_weights(cfg, (val_recon - val_x) ** 2, parts["val"].abnormal)
        del val_recon
        from models.cae import center_weights

        model.set_score_weights(
            center_weights(
                int(cfg["data"]["width"]),
                float(cfg["data"]["target_fs"]),
                choice["center_seconds"],
                choice["center_weight"],
            )
        )
        torch.save(model.state_dict(), sub / "checkpoint.pt")
        val_morph = predict_batches(model, (val_x,), device=torch.device("cpu"))[1]
        ref_beats = BeatSet(
            *(
                np.concatenate([getattr(parts["train"], f), getattr(parts["val"], f)])
                for f in ("windows", "aami", "symbol", "record", "sample")
            )
        )
        rhythm = (
            choose_rhythm(cfg, ref_beats, parts["val"], val_morph, parts["all"])
            if cfg.get("rhythm_grid")
            else None
        )
        del ref_beats
        test_x = _normalise(cfg, parts["test"].windows)
        test_recon, test_morph = predict_batches(model, (test_x,), device=torch.device("cpu"))
        val_scores, test_scores = val_morph, test_morph
        if rhythm is not None:
            val_scores = _decision(
                val_morph, rhythm_for(parts["val"], rhythm, parts["all"]), rhythm
            )
            test_scores = _decision(
                test_morph, rhythm_for(parts["test"], rhythm, parts["all"]), rhythm
            )
        figures = _report_figures(parts, val_scores, test_scores, threshold_method(cfg, protocol))
        examples = [
            int(np.flatnonzero(parts["test"].aami == c)[0])
            for c in "NSVF"
            if (parts["test"].aami == c).any()
        ]
        _plots(
            sub,
            parts,
            val_scores,
            test_scores,
            figures["threshold"]["value"],
            test_recon[examples],
            test_x[examples],
            protocol,
        )
        metrics = {
            "protocol": protocol,
            "split": desc,
            "split_params": params,
            "train_windows_n": int(tr_idx.size),
            "parameters": count_parameters(model),
            "fit": fit_info,
            "score_weights": choice,
            "rhythm": rhythm,
            **figures,
        }
        write_json(sub / "metrics.json", metrics)
        summary[protocol] = {
            k: metrics["test"][k]
            for k in ("roc_auc", "accuracy", "sensitivity", "specificity", "f1", "recall_by_class")
        }
    summary["seed"] = SEED_FIGURES
    write_json(run_dir / "metrics.json", summary)
    if not ctx.as_json:
        print(json.dumps(summary, indent=2))
    return run_dir


def _run_dir(ctx: TaskContext) -> Path:
    from training.trainer import latest_run_dir

    return ctx.run_dir or latest_run_dir(ctx.runs_dir, "cae")


def export(ctx: TaskContext) -> Path:
    """Export every protocol of a run (pooled first) to ONNX + card; test figures recomputed via the ORT wrapper."""
    import torch

    from models.export import card_path_for, export_with_card
    from models.runtime.cae import CaeScorer
    from training.metrics import binary_report

    run_dir = _run_dir(ctx)
    cfg = json.loads((run_dir / "config.json").read_text())
    protos = [p for p in ("pooled", "inter_patient") if (run_dir / p / "checkpoint.pt").is_file()]
    if not protos:
        raise ConfigError(f"run {run_dir} has no protocol checkpoints")
    ctx.artifacts_dir.mkdir(parents=True, exist_ok=True)
    cards: dict[str, dict[str, Any]] = {}
    last = Path()
    for protocol in protos:
        metrics = json.loads((run_dir / protocol / "metrics.json").read_text())
        model = build_model(cfg)
        model.load_state_dict(
            torch.load(run_dir / protocol / "checkpoint.pt", map_location="cpu", weights_only=True)
        )
        model.eval()
        params = metrics["split_params"]
        parts, desc = protocol_splits(ctx, params)
        rng = np.random.default_rng(0)
        real = _normalise(
            cfg,
            parts["val"].windows[
                np.sort(rng.choice(len(parts["val"]), min(1024, len(parts["val"])), replace=False))
            ],
        )
        onnx_path = ctx.artifacts_dir / f"{ARTIFACTS[protocol]}.onnx"
        fields: dict[str, Any] = {
            "description": "Convolutional autoencoder anomaly scorer for 2 s single-lead beat windows (MIT-BIH); score = weighted reconstruction MSE, trained on AAMI N beats only.",
            "protocol": protocol,
            "sampling_rate_hz": float(params["target_fs"]),
            "window_samples": int(params["width"]),
            "lead": "MLII (first lead where absent)",
            "preprocessing": "stream.stages.filtering.filter_signal (causal Butterworth band-pass 0.5-40 Hz) on the whole lead, then stream.stages.segmentation.beat_windows centred on annotated beats",
            "normalisation": {
                "method": cfg["data"]["normalisation"],
                "eps": float(cfg["data"]["eps"]),
                "per": "window",
                "formula": "(x - mean(x)) / (std(x) + eps)"
                if cfg["data"]["normalisation"] == "zscore"
                else cfg["data"]["normalisation"],
            },
            "score": {
                "output": "score",
                "definition": "mean over samples of w * (reconstruction - input)^2; w = center_weight within center_seconds around the window centre, normalised to mean 1",
                **metrics["score_weights"],
                "positive": "abnormal (AAMI S, V, F, Q)",
            },
            "training_data": f"MIT-BIH Arrhythmia Database 1.0.0 (Moody & Mark 2001), AAMI-N windows of the train split only, {metrics['train_windows_n']} windows (seeded subsample)",
            "split": desc,
            "split_params": params,
            "rhythm": metrics.get("rhythm"),
            "decision_score": (
                "log(score) + rhythm.weight * stream.stages.rhythm.rhythm_score(pre_rr, post_rr, reference_rr); reference = rhythm.quantile of the rhythm.history RR intervals before the beat; the threshold applies to this decision score"
                if metrics.get("rhythm")
                else "score (morphology only); the threshold applies to it"
            ),
            "threshold": metrics["threshold"],
            "fit": metrics["fit"],
            "architecture": {
                k: cfg["model"][k]
                for k in ("channels", "kernels", "strides", "latent", "head_channels")
            },
            "seed_figures": SEED_FIGURES,
            "training_config": cfg,
            "command": ctx.command or "python -m training export cae",
            "train_command": cfg.get("command"),
            "run_dir": str(run_dir),
        }
        card = export_with_card(
            model,
            onnx_path,
            {"window": real},
            ["reconstruction", "score"],
            fields,
            CARDS[ARTIFACTS[protocol]],
        )
        # test figures from the exported artifact through the runtime wrapper (what `evaluate` recomputes)
        scorer = CaeScorer.load(ARTIFACTS[protocol], ctx.artifacts_dir)
        th = scorer.threshold
        test_scores = _scorer_scores(scorer, parts["test"], parts["all"])
        val_scores = _scorer_scores(scorer, parts["val"], parts["all"])
        card["metrics"] = {
            "test": binary_report(parts["test"].abnormal, test_scores, th, parts["test"].aami),
            "validation": binary_report(parts["val"].abnormal, val_scores, th, parts["val"].aami),
            "source": "ONNX Runtime via models.runtime.cae.CaeScorer on the test split (read once)",
        }
        pooled_card = ctx.artifacts_dir / f"{ARTIFACTS['pooled']}.card.json"
        if protocol == "inter_patient" and "pooled" not in cards and pooled_card.is_file():
            cards["pooled"] = json.loads(
                pooled_card.read_text()
            )  # pooled model exported from an earlier run
        if protocol == "inter_patient" and "pooled" in cards:
            card["metrics_protocol_a_pooled"] = {
                "artifact": "cae_pooled.onnx",
                "run_dir": cards["pooled"].get("run_dir"),
                "test": cards["pooled"]["metrics"]["test"],
            }
        card_path_for(onnx_path).write_text(json.dumps(card, indent=2) + "\n")
        cards[protocol] = card
        last = onnx_path
        print(
            f"exported {onnx_path} ({card['onnx_bytes']} bytes, parity max abs diff {card['parity']['max_abs_diff']:.2e}); test ROC-AUC {card['metrics']['test']['roc_auc']:.4f}"
        )
    return last


def evaluate(ctx: TaskContext) -> dict[str, Any]:
    """Test figures of both protocols from the committed ONNX artifacts (or a run's checkpoints)."""
    from models.runtime.base import load_card
    from models.runtime.cae import CaeScorer
    from training.metrics import binary_report

    out: dict[str, Any] = {}
    keys = (
        "roc_auc",
        "accuracy",
        "sensitivity",
        "specificity",
        "f1",
        "precision",
        "pr_auc",
        "threshold",
        "n",
        "recall_by_class",
        "count_by_class",
    )
    for protocol in PROTOCOLS:
        name = ARTIFACTS[protocol]
        if ctx.extra.get("source") == "checkpoint":
            import torch

            from training.trainer import predict_batches

            run_dir = _run_dir(ctx)
            cfg = json.loads((run_dir / "config.json").read_text())
            metrics = json.loads((run_dir / protocol / "metrics.json").read_text())
            params, th = metrics["split_params"], float(metrics["threshold"]["value"])
            model = build_model(cfg)
            model.load_state_dict(
                torch.load(
                    run_dir / protocol / "checkpoint.pt", map_location="cpu", weights_only=True
                )
            )
            parts, _ = protocol_splits(ctx, params)
            scores = predict_batches(
                model.eval(), (_normalise(cfg, parts["test"].windows),), device=torch.device("cpu")
            )[1]
            if metrics.get("rhythm"):
                scores = _decision(
                    scores,
                    rhythm_for(parts["test"], metrics["rhythm"], parts["all"]),
                    metrics["rhythm"],
                )
        else:
            onnx = ctx.artifacts_dir / f"{name}.onnx"
            if not onnx.is_file():
                out[protocol] = {
                    "error": f"{onnx} missing; run `python -m training train cae` then `export cae`"
                }
                continue
            card = load_card(onnx.with_name(f"{name}.card.json"))
            params = card.get("split_params")
            scorer = CaeScorer.load(name, ctx.artifacts_dir)
            th = scorer.threshold
            parts, _ = protocol_splits(ctx, params)
            scores = _scorer_scores(scorer, parts["test"], parts["all"])
        rep = binary_report(parts["test"].abnormal, scores, th, parts["test"].aami)
        out[protocol] = {k: rep[k] for k in keys}
    out["seed"] = SEED_FIGURES
    if "pooled" in out and "roc_auc" in out["pooled"]:
        out["pooled_vs_seed"] = {
            k: {
                "ours": out["pooled"][k],
                "seed": SEED_FIGURES[k],
                "beats_seed": out["pooled"][k] > SEED_FIGURES[k],
            }
            for k in ("roc_auc", "accuracy", "sensitivity", "specificity", "f1")
        }
    return out


def report(ctx: TaskContext) -> dict[str, Any]:
    """The committed cards' figures and the latest run's plots."""
    from training.registry import committed_cards, run_plots

    out: dict[str, Any] = {}
    for protocol, c in committed_cards(ctx, {p: ARTIFACTS[p] for p in PROTOCOLS}).items():
        out[protocol] = {
            "artifact": c["onnx_file"],
            "sha256": c["onnx_sha256"],
            "parameters": c.get("parameters"),
            "threshold": c.get("threshold"),
            "test": {
                k: c["metrics"]["test"][k]
                for k in (
                    "roc_auc",
                    "accuracy",
                    "sensitivity",
                    "specificity",
                    "f1",
                    "recall_by_class",
                )
            },
            "parity_max_abs_diff": c["parity"]["max_abs_diff"],
            "run_dir": c.get("run_dir"),
        }
    out["plots"] = run_plots(lambda: _run_dir(ctx))
    out["seed"] = SEED_FIGURES
    return out


SPEC = ModelSpec(
    name="cae",
    description="Convolutional autoencoder: beat-window anomaly score on MIT-BIH (inter-patient + pooled protocols)",
    prepare=prepare,
    train=train,
    evaluate=evaluate,
    export=export,
    report=report,
    cards=CARDS,
)
