"""Shared code path of the three PTB-XL 12-lead anomaly models (``cae12``, ``vae_bilstm``, ``vae_bilstm_mha``).

Protocol (identical for the three):

- data: PTB-XL 100 Hz via :mod:`training.datasets.ptbxl` (stream filter, 10 s window, mV), with the
  extra records of ``ptbxl_extra_records.csv`` (``data.extra``, default true): fold 9 complete (2,183
  records, the true class mix) and 2,157 more NORM training records of folds 1-8;
- training: NORM-only records (superclasses == {NORM}) of strat_fold 1-8 and the extra "train" records;
  early stopping on the NORM records of fold 9;
- per-lead normalisation inside the network: centre = per-lead median, scale = per-lead
  (q75 - q25) / 1.349 over all samples of the training NORM records;
- checkpoint: lowest validation loss (NORM records of fold 9), or with ``train.select_on = "val_auroc"``
  the epoch whose best scoring rule has the highest fold-9 AUROC (NORM vs not NORM); ``train.init_from``
  (a run directory) continues that run's weights;
- scoring rule and threshold chosen on fold 9 (all records with a diagnostic label, NORM vs not
  NORM): the rule with the best validation AUROC among ``scoring.candidates``, threshold at the
  maximum of Youden's J on fold 9;
- test: the shipped fold 10 (631 records, biased towards clear abnormal cases: only ~24 % NORM against
  ~42 % in PTB-XL), read once per reported figure, through the exported ONNX model and its runtime
  wrapper (``evaluate MODEL``), or the run's torch weights (``--source checkpoint``). ``evaluate`` reports it
  as ``test_shipped_fold10`` (and, unchanged, at the top level) beside ``validation`` (complete fold 9),
  ``validation_shipped_fold9`` (fold 9's shipped records only: the figure older cards reported) and
  ``ece`` (calibration of a Platt mapping of the score fitted on fold 9, at the card's threshold).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from models.card import LEADS_10S
from models.card import contract as card_contract
from models.preprocessing.leads import TWELVE_LEADS
from training.datasets.ptbxl import (
    SUPERCLASSES,
    TEST_FOLDS,
    TRAIN_SPLIT,
    VAL_FOLDS,
    PtbxlData,
    load_ptbxl,
)
from training.errors import ConfigError
from training.registry import ModelSpec, TaskContext

OUTPUTS_CAE = ["recon", "lead_error"]
OUTPUTS_VAE = ["recon", "lead_error", "kl"]
OUTPUTS_MHA = ["recon", "lead_error", "kl", "lead_attention", "time_attention"]


@dataclass(frozen=True)
class Architecture:
    """What differs between the 12-lead anomaly models: the network builder (from the config's ``model``
    section), the graph's outputs, and whether it is variational (ELBO loss and scoring rules)."""

    build: Callable[[dict[str, Any]], Any]
    outputs: tuple[str, ...]
    variational: bool


#: name -> architecture, filled by :func:`make_spec` (each task module declares its own)
_ARCHITECTURES: dict[str, Architecture] = {}


def _outputs(name: str) -> list[str]:
    return list(_ARCHITECTURES[name].outputs)


def _data(ctx: TaskContext, extra: bool | None = None) -> PtbxlData:
    """PTB-XL for ``ctx``; ``extra`` (default: the config's ``data.extra``, true) adds the extra records."""
    dcfg = ctx.config.get("data", {})
    if extra is None:
        extra = bool(dcfg.get("extra", True))
    return load_ptbxl(
        ctx.data_dir, ctx.cache_dir, limit=dcfg.get("limit"), progress=ctx.progress, extra=extra
    )


def split_doc(extra: bool) -> str:
    """The data split in words (cards and evaluate output)."""
    if not extra:
        return (
            "shipped records only: strat_fold 1-8 train (NORM only), 9 validation (early stopping on NORM; "
            "scoring rule and threshold on all labelled records), 10 test"
        )
    return (
        "strat_fold 1-8 train (NORM only: the shipped NORM records of folds 1-8 and the 2,157 extra NORM "
        "records of ptbxl_extra_records.csv, split 'train'), 9 validation complete (628 shipped + 1,555 "
        "extra records, the true PTB-XL class mix: checkpoint, scoring rule and threshold chosen on it alone), "
        "10 test (the shipped 631 records only, biased towards clear abnormal cases; reported, never used "
        "for a choice)"
    )


def build_model(name: str, mcfg: dict[str, Any]) -> Any:
    """The torch network of ``name`` from the config's ``model`` section."""
    return _ARCHITECTURES[name].build(mcfg)


def build_cae12(mcfg: dict[str, Any]) -> Any:
    """:class:`models.cae12.CAE12` from a ``model`` config section."""
    from models.cae12 import CAE12

    return CAE12(
        channels=tuple(mcfg.get("channels", (32, 64, 64))),
        bottleneck=int(mcfg.get("bottleneck", 8)),
        record_norm=mcfg.get("norm", "global") == "record",
    )


def build_vae_bilstm(attention: bool) -> Callable[[dict[str, Any]], Any]:
    """Builder of :class:`models.vae_bilstm.VAEBiLSTM` (with or without attention)."""

    def build(mcfg: dict[str, Any]) -> Any:
        from models.vae_bilstm import VAEBiLSTM

        return VAEBiLSTM(
            hidden=int(mcfg.get("hidden", 48)),
            latent=int(mcfg.get("latent", 8)),
            conv=int(mcfg.get("conv", 32)),
            attention=attention,
            heads=int(mcfg.get("heads", 4)),
            record_norm=mcfg.get("norm", "global") == "record",
        )

    return build


def lead_stats(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-lead median and robust scale ((q75 - q25) / 1.349) of ``x [n, T, 12]``."""
    flat = x.reshape(-1, x.shape[-1])
    q25, q50, q75 = np.percentile(flat, [25, 50, 75], axis=0)
    scale = np.maximum((q75 - q25) / 1.349, 1e-3)
    return q50.astype(np.float32), scale.astype(np.float32)


def binary_targets(d: PtbxlData) -> tuple[np.ndarray, np.ndarray]:
    """(mask of labelled records, y = 1 for not-NORM) for NORM vs not-NORM."""
    keep = d.has_label
    return keep, (~d.normal[keep]).astype(np.int64)


def youden_threshold(y: np.ndarray, score: np.ndarray) -> float:
    """Threshold maximising sensitivity + specificity - 1 (``score > t`` is anomalous)."""
    from sklearn.metrics import roc_curve

    fpr, tpr, thr = roc_curve(y, score)
    i = int(np.argmax(tpr - fpr))
    # roc_curve uses score >= thr; place the cut just below that score
    t = float(thr[i])
    lower = score[score < t]
    return float((t + lower.max()) / 2) if lower.size else t - 1e-9


def metrics(d: PtbxlData, score: np.ndarray, threshold: float) -> dict[str, Any]:
    """AUROC/AUPRC NORM vs not-NORM, AUROC per superclass (class vs NORM), sens/spec at threshold."""
    from sklearn.metrics import average_precision_score, roc_auc_score

    keep, y = binary_targets(d)
    s = score[keep]
    pred = s > threshold
    by_class: dict[str, float] = {}
    norm = d.normal
    for j, c in enumerate(SUPERCLASSES):
        if c == "NORM":
            continue
        pos = d.labels[:, j]
        sel = pos | norm
        if pos.sum() and norm.sum():
            by_class[c] = float(roc_auc_score(pos[sel].astype(int), score[sel]))
    tp = int((pred & (y == 1)).sum())
    tn = int((~pred & (y == 0)).sum())
    return {
        "auroc": float(roc_auc_score(y, s)),
        "auprc": float(average_precision_score(y, s)),
        "auroc_by_superclass": by_class,
        "sensitivity": tp / max(int((y == 1).sum()), 1),
        "specificity": tn / max(int((y == 0).sum()), 1),
        "threshold": float(threshold),
        "n_records": int(keep.sum()),
        "n_abnormal": int(y.sum()),
        "n_normal": int((y == 0).sum()),
        "n_unlabelled_excluded": int((~keep).sum()),
    }


def split_figures(
    val: PtbxlData,
    val_score: np.ndarray,
    test: PtbxlData,
    test_score: np.ndarray,
    threshold: float,
) -> dict[str, Any]:
    """The figures of one model at ``threshold`` on the complete fold 9 (``validation``), on fold 9's
    shipped records (``validation_shipped_fold9``, what cards before the extra records reported), on the
    shipped fold 10 (``test_shipped_fold10``), and the calibration at the operating point (``ece``: a Platt
    mapping of the score fitted on the complete fold 9, ECE with 10 bins on fold 9 and on fold 10)."""
    from training.metrics import calibration_report

    shipped = ~val.extra
    out: dict[str, Any] = {
        "validation": {
            **metrics(val, val_score, threshold),
            "split": f"PTB-XL fold 9, {'complete' if val.extra.any() else 'shipped records only'} "
            f"({len(val)} records; {int(val.extra.sum())} from ptbxl_extra_records.csv)",
        },
        "validation_shipped_fold9": {
            **metrics(val.subset(shipped), val_score[shipped], threshold),
            "split": f"PTB-XL fold 9, shipped records only ({int(shipped.sum())} records)",
        },
        "test_shipped_fold10": {
            **metrics(test, test_score, threshold),
            "split": f"PTB-XL fold 10, shipped records only ({len(test)} records; biased towards clear "
            "abnormal cases, so optimistic)",
        },
    }
    kv, yv = binary_targets(val)
    kt, yt = binary_targets(test)
    out["ece"] = {
        **calibration_report(
            yv,
            val_score[kv],
            threshold,
            held_out={"test_shipped_fold10": (yt, test_score[kt])},
        ),
        "note": "fitted and cross-fitted on the complete fold 9 (true class mix); on the shipped fold 10 "
        "(about 24 % NORM against 42 % on fold 9) the prior differs, so its ECE also measures that shift",
    }
    return out


def _torch_outputs(name: str, model: Any, x: np.ndarray) -> dict[str, np.ndarray]:
    from training.trainer import predict_batches

    outs = predict_batches(model, (x,), batch=128)
    return dict(zip(_outputs(name), outs, strict=True))


def choose_scoring(
    name: str,
    cfg: dict[str, Any],
    train_out: dict[str, np.ndarray],
    val: PtbxlData,
    val_out: dict[str, np.ndarray],
) -> dict[str, Any]:
    """Pick the scoring rule with the best fold-9 AUROC and its Youden threshold."""
    from sklearn.metrics import roc_auc_score

    from models.runtime.anomaly12 import anomaly_score

    beta = float(cfg.get("train", {}).get("beta", 1.0))
    ref = np.median(train_out["lead_error"], axis=0)
    base: dict[str, Any] = {"lead_reference": ref.tolist(), "beta": beta}
    if "kl" in train_out:
        base["kl_reference"] = float(np.median(train_out["kl"]))
    candidates = cfg.get("scoring", {}).get(
        "candidates", ["mean", "lead_weighted_mean", "lead_max", "top3"]
    )
    if not _ARCHITECTURES[name].variational:
        candidates = [c for c in candidates if not c.startswith("elbo")]
    keep, y = binary_targets(val)
    table = {}
    for method in candidates:
        s = anomaly_score(val_out["lead_error"], val_out.get("kl"), {**base, "method": method})
        table[method] = float(roc_auc_score(y, s[keep]))
    best = max(table, key=lambda k: table[k])
    scoring = {**base, "method": best, "validation_auroc_by_method": table}
    s = anomaly_score(val_out["lead_error"], val_out.get("kl"), scoring)
    scoring["threshold"] = youden_threshold(y, s[keep])
    return scoring


def make_train(name: str) -> Any:
    def train(ctx: TaskContext) -> Path:
        import torch
        from torch.utils.data import DataLoader

        from training.trainer import FitConfig, fit, select_device, start_run, write_json

        cfg = ctx.config
        tcfg = cfg.get("train", {})
        run_dir = start_run(ctx, name, seed=int(tcfg.get("seed", 0)))
        device = select_device(ctx.device)
        data = _data(ctx)
        tr = data.folds(TRAIN_SPLIT)
        tr = tr.subset(tr.normal)
        va_all = data.folds(VAL_FOLDS)
        va = va_all.subset(va_all.normal)
        if len(tr) == 0 or len(va) == 0:
            raise ConfigError("no NORM records in the training or validation folds")
        model = build_model(name, cfg.get("model", {}))
        center, scale = lead_stats(tr.x)
        model.norm.set_stats(torch.from_numpy(center), torch.from_numpy(scale))
        if tcfg.get("init_from"):  # continue a run: its weights and its normalisation
            src = Path(tcfg["init_from"]) / "checkpoint.pt"
            if not src.is_file():
                raise ConfigError(f"train.init_from: {src} does not exist")
            model.load_state_dict(torch.load(src, map_location="cpu", weights_only=True))
        bs = int(tcfg.get("batch_size", 32))
        gen = torch.Generator().manual_seed(int(tcfg.get("seed", 0)))
        xtr = torch.from_numpy(tr.x)
        xva = torch.from_numpy(va.x)
        crop = int(tcfg.get("crop", 0))
        collate = None
        if 0 < crop < tr.x.shape[1]:

            def collate(
                items: list[Any],
            ) -> Any:  # random crops (augmentation); the nets are length-agnostic
                start = int(torch.randint(0, tr.x.shape[1] - crop + 1, (1,), generator=gen))
                return torch.stack(items)[:, start : start + crop]

        train_loader: DataLoader[torch.Tensor] = DataLoader(
            xtr,  # type: ignore[arg-type]  # a Tensor is a map-style dataset
            batch_size=bs,
            shuffle=True,
            generator=gen,
            drop_last=len(tr) > bs,
            collate_fn=collate,
        )
        val_loader: DataLoader[torch.Tensor] = DataLoader(xva, batch_size=128)  # type: ignore[arg-type]
        beta = float(tcfg.get("beta", 1.0))

        if not _ARCHITECTURES[name].variational:

            def loss_fn(m: Any, batch: Any) -> Any:
                _, lead_err = m(batch)
                return lead_err.mean()
        else:

            def loss_fn(m: Any, batch: Any) -> Any:
                rec, kl = m.elbo_terms(batch)
                return (rec + beta * kl).mean()

        select_fn = None
        if (
            tcfg.get("select_on") == "val_auroc"
        ):  # checkpoint = best fold-9 AUROC of the scoring rules
            ref_n = min(len(tr), int(tcfg.get("select_reference_records", 300)))
            ref_x = tr.x[
                np.random.default_rng(int(tcfg.get("seed", 0))).choice(
                    len(tr), ref_n, replace=False
                )
            ]

            def select_fn(m: Any) -> float:
                sc = choose_scoring(
                    name,
                    cfg,
                    _torch_outputs(name, m, ref_x),
                    va_all,
                    _torch_outputs(name, m, va_all.x),
                )
                return max(sc["validation_auroc_by_method"].values())

        result = fit(
            model,
            train_loader,
            val_loader,
            loss_fn,
            FitConfig.from_dict(tcfg),
            run_dir,
            device,
            ctx.progress,
            desc=name,
            select_fn=select_fn,
        )
        model = model.cpu().eval()
        train_out = _torch_outputs(name, model, tr.x)
        val_out = _torch_outputs(name, model, va_all.x)
        scoring = choose_scoring(name, cfg, train_out, va_all, val_out)
        from models.runtime.anomaly12 import anomaly_score

        val_score = anomaly_score(val_out["lead_error"], val_out.get("kl"), scoring)
        val_metrics = metrics(va_all, val_score, scoring["threshold"])
        shipped = ~va_all.extra
        write_json(run_dir / "scoring.json", scoring)
        write_json(
            run_dir / "metrics.json",
            {
                "validation": val_metrics,
                "validation_shipped_fold9": metrics(
                    va_all.subset(shipped), val_score[shipped], scoring["threshold"]
                )
                if shipped.any() and shipped.sum() < len(va_all)
                else None,
                "fit": result.to_dict(),
                "n_train_norm": len(tr),
                "n_train_norm_extra": int(tr.extra.sum()),
                "n_val_norm": len(va),
                "n_val_records": len(va_all),
                "n_val_extra": int(va_all.extra.sum()),
            },
        )
        if ctx.progress:
            print(
                f"{name}: validation AUROC {val_metrics['auroc']:.4f} with scoring {scoring['method']}"
            )
        return run_dir

    return train


def _load_run(name: str, ctx: TaskContext) -> tuple[Any, Path, dict[str, Any]]:
    import torch

    from training.trainer import latest_run_dir

    run_dir = ctx.run_dir or latest_run_dir(ctx.runs_dir, name)
    cfg = json.loads((run_dir / "config.json").read_text())
    model = build_model(name, cfg.get("model", {}))
    model.load_state_dict(
        torch.load(run_dir / "checkpoint.pt", map_location="cpu", weights_only=True)
    )
    return model.eval(), run_dir, cfg


def _init_from_summary(cfg: dict[str, Any]) -> dict[str, Any] | None:
    """The run a continued run (``train.init_from``) started from: its config and fit summary."""
    src = cfg.get("train", {}).get("init_from")
    if not src:
        return None
    out: dict[str, Any] = {"run_dir": str(src)}
    for key, file in (("config", "config.json"), ("metrics", "metrics.json")):
        path = Path(src) / file
        if path.is_file():
            data = json.loads(path.read_text())
            if key == "metrics":  # the fit summary and the figure it reached, not the whole history
                fit = dict(data.get("fit") or {})
                fit.pop("history", None)
                data = {"fit": fit, "validation_auroc": (data.get("validation") or {}).get("auroc")}
            out[key] = data
    return out


def make_export(name: str) -> Any:
    def export(ctx: TaskContext) -> Path:
        from models.export import export_with_card
        from models.runtime.anomaly12 import anomaly_score
        from training.trainer import write_json

        model, run_dir, cfg = _load_run(name, ctx)
        scoring = json.loads((run_dir / "scoring.json").read_text())
        run_metrics = json.loads((run_dir / "metrics.json").read_text())
        extra = bool(cfg.get("data", {}).get("extra", False))  # how the run was trained
        data = _data(ctx, extra=True)
        val = data.folds(VAL_FOLDS)
        test = data.folds(TEST_FOLDS)
        scores = {}
        for label, d in (("validation", val), ("test", test)):
            out = _torch_outputs(name, model, d.x)
            scores[label] = anomaly_score(out["lead_error"], out.get("kl"), scoring)
        split_metrics = split_figures(
            val, scores["validation"], test, scores["test"], float(scoring["threshold"])
        )
        onnx_path = Path(ctx.artifacts_dir) / f"{name}.onnx"
        card = export_with_card(
            model,
            onnx_path,
            {"ecg": val.x[:64]},
            _outputs(name),
            {
                "task": "12-lead ECG anomaly detection (NORM vs not-NORM), unsupervised",
                "input": {
                    "name": "ecg",
                    "shape": ["batch", 1000, 12],
                    "fs_hz": 100.0,
                    "units": "mV",
                    "leads": list(TWELVE_LEADS),
                    "preprocessing": "stream.stages.filtering.filter_signal (causal 0.5-40 Hz) then "
                    "stream.stages.segmentation.lead_windows(target_fs=100, width=1000); "
                    "models.runtime.anomaly12.preprocess does both",
                },
                "normalisation": {
                    "where": "inside the ONNX graph",
                    "rule": "per lead (x - center) / scale; center = median, scale = IQR/1.349 over all samples "
                    "of the training NORM records (PTB-XL folds 1-8)",
                    "center": model.norm.center.numpy().tolist(),
                    "scale": model.norm.scale.numpy().tolist(),
                },
                "outputs_doc": {
                    "recon": "[B,1000,12] reconstruction in mV",
                    "lead_error": "[B,12] mean squared error per lead, normalised units",
                    "kl": "[B] KL(q(z|x) || N(0,I)) per latent step (VAEs)",
                    "lead_attention": "[B,12] mean lead-wise attention received per lead (MHA model)",
                    "time_attention": "[B,1000] mean temporal attention received per step (MHA model)",
                },
                "scoring": scoring,
                "threshold": {
                    "value": scoring["threshold"],
                    "rule": "maximum of Youden's J (sens + spec - 1) on PTB-XL fold 9 "
                    + ("(complete: 2,183 records); " if extra else "(shipped records); ")
                    + "score > threshold = anomalous",
                },
                "training_data": {
                    "dataset": "PTB-XL 1.0.3 (records100 subset shipped under ECG_DATA_DIR/ptbxl"
                    + (", with the 3,712 records of ptbxl_extra_records.csv)" if extra else ")"),
                    "split": split_doc(extra),
                    "labels": "diagnostic superclasses from scp_codes with diagnostic == 1 in scp_statements.csv "
                    "(extra records without scp_codes: the superclass flags of ptbxl_extra_records.csv); "
                    "NORM = superclasses exactly {NORM}; records without a diagnostic statement excluded from metrics",
                    "n_train_norm": run_metrics.get("n_train_norm"),
                    "n_train_norm_extra": run_metrics.get("n_train_norm_extra", 0),
                    "n_validation_records": len(val),
                    "n_test_records": len(test),
                },
                "config": cfg,
                "init_from_run": _init_from_summary(cfg),
                "metrics": split_metrics,
                "run_dir": str(run_dir),
                "command": ctx.command,
                "published_reference": {"unsupervised PTB-XL AUROC": [0.860, 0.872]},
            },
            card_contract_of(name),
        )
        write_json(run_dir / "export.json", {"onnx": str(onnx_path), "sha256": card["onnx_sha256"]})
        return onnx_path

    return export


def _scores_from_onnx(
    name: str, ctx: TaskContext, x: np.ndarray
) -> tuple[np.ndarray, float, dict[str, Any]]:
    from models.runtime.anomaly12 import Anomaly12Model

    model = Anomaly12Model.load(name, ctx.artifacts_dir)
    pred = model.predict(x)
    return (
        pred.score,
        model.threshold_value,
        {"source": "onnx", "onnx": str(model.onnx_path), "onnx_sha256": model.card.onnx_sha256},
    )


def make_evaluate(name: str) -> Any:
    def evaluate(ctx: TaskContext) -> dict[str, Any]:
        from models.runtime.anomaly12 import anomaly_score
        from training.trainer import write_json

        data = _data(ctx, extra=True)
        test = data.folds(TEST_FOLDS)
        val = data.folds(VAL_FOLDS)
        if ctx.extra.get("source", "onnx") == "checkpoint":
            model, run_dir, _ = _load_run(name, ctx)
            scoring = json.loads((run_dir / "scoring.json").read_text())
            val_score, score = (
                anomaly_score(o["lead_error"], o.get("kl"), scoring)
                for o in (_torch_outputs(name, model, d.x) for d in (val, test))
            )
            threshold = float(scoring["threshold"])
            info: dict[str, Any] = {"source": "checkpoint", "run_dir": str(run_dir)}
        else:
            val_score, threshold, info = _scores_from_onnx(name, ctx, val.x)
            score, _, _ = _scores_from_onnx(name, ctx, test.x)
        res = metrics(test, score, threshold)  # the test figures stay at the top level, as before
        res.update({"model": name, "split": "PTB-XL strat_fold 10 (test, shipped records)", **info})
        res.update(split_figures(val, val_score, test, score, threshold))
        if info["source"] == "checkpoint":
            write_json(Path(info["run_dir"]) / "test_metrics.json", res)
        return res

    return evaluate


def make_prepare(name: str) -> Any:
    def prepare(ctx: TaskContext) -> dict[str, Any]:
        from training.datasets.ptbxl import UNKNOWN_PATIENT, cache_path, extra_cache_path

        data = _data(ctx)
        out: dict[str, Any] = {
            "records": len(data),
            "extra_records": int(data.extra.sum()),
            "cache": str(cache_path(ctx.data_dir, ctx.cache_dir)),
        }
        if data.extra.any():
            out["extra_cache"] = str(extra_cache_path(ctx.data_dir, ctx.cache_dir))
        for label, folds in (
            ("train", TRAIN_SPLIT),
            ("validation", VAL_FOLDS),
            ("test", TEST_FOLDS),
        ):
            d = data.folds(folds)
            known = d.patient_id != UNKNOWN_PATIENT
            out[label] = {
                "records": len(d),
                "extra_records": int(d.extra.sum()),
                "norm": int(d.normal.sum()),
                "patients": int(np.unique(d.patient_id[known]).size),
                "records_without_patient_id": int((~known).sum()),
            }
        return out

    return prepare


def make_report(name: str) -> Any:
    def report(ctx: TaskContext) -> dict[str, Any]:
        from models.runtime.anomaly12 import Anomaly12Model
        from training.tasks._figures import plot_12lead_reconstruction

        model = Anomaly12Model.load(name, ctx.artifacts_dir)
        data = _data(ctx)
        test = data.folds(TEST_FOLDS)
        out_dir = Path(ctx.runs_dir) / name / "report"
        out_dir.mkdir(parents=True, exist_ok=True)
        figures = []
        picks = {
            "norm": int(np.flatnonzero(test.normal)[0]),
            **{
                c: int(np.flatnonzero(test.labels[:, j] & ~test.normal)[0])
                for j, c in enumerate(SUPERCLASSES)
                if c != "NORM" and (test.labels[:, j] & ~test.normal).any()
            },
        }
        for label, i in picks.items():
            pred = model.predict(test.x[i])
            title = (
                f"{name}: PTB-XL ecg_id {int(test.ecg_id[i])} ({label}), score {float(pred.score[0]):.3g} "
                f"(threshold {model.threshold_value:.3g}) -> {'ANOMALY' if pred.is_anomaly[0] else 'normal'}"
            )
            path = out_dir / f"{name}_reconstruction_{label}.png"
            plot_12lead_reconstruction(
                test.x[i],
                pred.recon[0],
                path,
                title,
                lead_relative_error=pred.lead_relative_error[0],
                lead_attention=None if pred.lead_attention is None else pred.lead_attention[0],
                time_attention=None if pred.time_attention is None else pred.time_attention[0],
            )
            figures.append(str(path))
        return {
            "model": name,
            "figures": figures,
            "card": str(model.onnx_path.with_name(f"{name}.card.json")),
            "validation_metrics": model.card.metrics.get("validation"),
        }

    return report


def card_contract_of(name: str) -> dict[str, Any]:
    """The typed card contract of a 12-lead anomaly model: scorer of leads_10s windows (runtime
    ``anomaly12``), per-lead robust normalisation inside the graph."""
    return card_contract(
        "scorer", "anomaly12", LEADS_10S, {"method": "per_lead_robust", "where": "graph"}
    )


def make_spec(
    name: str,
    description: str,
    build: Callable[[dict[str, Any]], Any],
    outputs: Sequence[str],
    variational: bool,
) -> ModelSpec:
    """The registry entry of a 12-lead reconstruction anomaly model: its network ``build``er, graph
    ``outputs`` (``recon``, ``lead_error`` and optionally ``kl``, ``lead_attention``, ``time_attention``)
    and whether it is ``variational``. The stream serves it with the ``anomaly12`` runtime."""
    _ARCHITECTURES[name] = Architecture(build, tuple(outputs), variational)
    return ModelSpec(
        cards={name: card_contract_of(name)},
        name=name,
        description=description,
        prepare=make_prepare(name),
        train=make_train(name),
        evaluate=make_evaluate(name),
        export=make_export(name),
        report=make_report(name),
    )
