"""``lead_recon``: reconstruct missing ECG leads from the present ones (PTB-XL, 100 Hz, 10 s).

Protocol: train on every record of strat_fold 1-8 (all diagnoses), early stopping on fold 9, test on
fold 10 (patient-wise folds). Training masks are random and include the evaluated configurations:
{I, II, V4} present, {II} present, one lead missing, and Bernoulli subsets. The loss is the MSE on the
missing leads (normalised units). Training windows are random 3.2 s crops (the network is
convolutional; the contrastive embedding is a time average), evaluation uses the whole 10 s.

Optional contrastive stage (``model.use_contrastive``): the :class:`~models.lead_recon.ContrastiveEncoder`
is first trained with SupCon on the record's diagnostic superclass set, on masked inputs, then frozen.
Ablation: ``--set model.use_contrastive=false``.

Metrics (``evaluate lead_recon --json``), per configuration and per reconstructed lead, on fold 10:
``rmse`` (mV, over all samples), ``r2`` (1 - SSE / SS around each record's lead mean, pooled),
``pearson`` (mean over records of the per-record Pearson r); ``mean_pearson`` over the configuration's
target leads. Limb leads derivable from present limb leads are computed exactly (Einthoven/Goldberger)
by the runtime wrapper and reported separately under ``derived``.

Dedicated lead-II model (``--set variant=single``, config section ``single``): configuration (b) gets
its own network (:class:`~models.lead_recon.LeadReconII`, exported as ``lead_recon_ii.onnx``) trained
on {II} masks only with MSE + (1 - per-record Pearson r); no contrastive branch. The runtime wrapper
routes {II}-only windows to it. At export, a blend weight with the general model's {II} output is
chosen on fold 9 (``single.blend_grid``; 1 = dedicated alone) and written into its card. Each
configuration in ``evaluate --json`` names the artifact that served it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from models.card import LEADS_10S
from models.card import contract as card_contract
from models.runtime.lead_recon import CONFIGURATIONS, LIMB_LEADS, derive_limb_leads
from stream.records import TWELVE_LEADS
from training.augment import fit_back_projection, random_rotations, rotate_heart_axis
from training.datasets.ptbxl import (
    SUPERCLASSES,
    TEST_FOLDS,
    TRAIN_FOLDS,
    VAL_FOLDS,
    PtbxlData,
    load_ptbxl,
)
from training.registry import ModelSpec, TaskContext

NAME = "lead_recon"
_GRAPH_NORM = {"method": "per_lead_robust", "where": "graph"}
#: the typed card contracts: the general model rebuilds missing leads of leads_10s windows; the lead-II
#: model is a component it routes {II}-only windows to
CARDS = {
    NAME: card_contract("recoverer", "lead_recon", LEADS_10S, _GRAPH_NORM),
    f"{NAME}_ii": card_contract("component", "lead_recon", LEADS_10S, _GRAPH_NORM, member_of=NAME),
}
IDX = {lead: i for i, lead in enumerate(TWELVE_LEADS)}


def _data(ctx: TaskContext) -> PtbxlData:
    return load_ptbxl(
        ctx.data_dir,
        ctx.cache_dir,
        limit=ctx.config.get("data", {}).get("limit"),
        progress=ctx.progress,
    )


def sample_masks(n: int, rng: np.random.Generator, probs: dict[str, float]) -> np.ndarray:
    """Random presence masks [n, 12] (float32) from the configured mixture."""
    kinds = list(probs)
    p = np.array([probs[k] for k in kinds], dtype=np.float64)
    choice = rng.choice(len(kinds), size=n, p=p / p.sum())
    masks = np.zeros((n, 12), dtype=np.float32)
    for i, c in enumerate(choice):
        kind = kinds[c]
        if kind in CONFIGURATIONS and kind != "leave_one_out":
            masks[i, [IDX[lead] for lead in CONFIGURATIONS[kind]]] = 1.0
        elif kind == "leave_one_out":
            masks[i] = 1.0
            masks[i, rng.integers(12)] = 0.0
        else:  # bernoulli
            keep = rng.uniform(0.15, 0.9)
            m = rng.random(12) < keep
            if not m.any():
                m[rng.integers(12)] = True
            if m.all():
                m[rng.integers(12)] = False
            masks[i] = m
    return masks


def label_ids(d: PtbxlData) -> np.ndarray:
    """One int per record: its diagnostic superclass set as a bit pattern (SupCon positives share it)."""
    return (d.labels.astype(np.int64) * (1 << np.arange(len(SUPERCLASSES)))).sum(axis=1)


def build_model(mcfg: dict[str, Any]) -> Any:
    from models.lead_recon import LeadRecon

    return LeadRecon(
        stem=int(mcfg.get("stem", 32)),
        width=int(mcfg.get("width", 48)),
        head=int(mcfg.get("head", 12)),
        use_contrastive=bool(mcfg.get("use_contrastive", True)),
        contrastive_dim=int(mcfg.get("contrastive_dim", 64)),
        fuse_dim=int(mcfg.get("fuse_dim", 16)),
        dilations=tuple(mcfg.get("dilations", (1, 2, 4, 8, 16))),
    )


def build_single_model(mcfg: dict[str, Any]) -> Any:
    from models.lead_recon import LeadReconII

    return LeadReconII(
        stem=int(mcfg.get("stem", 32)),
        width=int(mcfg.get("width", 64)),
        head=int(mcfg.get("head", 16)),
        global_dim=int(mcfg.get("global_dim", 32)),
        dilations=tuple(mcfg.get("dilations", (1, 2, 4, 8, 16, 32))),
        film=bool(mcfg.get("film", False)),
        gru=int(mcfg.get("gru", 0)),
    )


def is_single(cfg: dict[str, Any]) -> bool:
    """Whether a run config is the dedicated single-lead model (``variant=single``)."""
    return str(cfg.get("variant", "multi")) == "single"


def _build(cfg: dict[str, Any]) -> Any:
    return (
        build_single_model(cfg["single"]["model"]) if is_single(cfg) else build_model(cfg["model"])
    )


def _crops(x: np.ndarray, length: int, rng: np.random.Generator) -> np.ndarray:
    starts = rng.integers(0, x.shape[1] - length + 1, size=x.shape[0])
    idx = starts[:, None] + np.arange(length)[None, :]
    return x[np.arange(x.shape[0])[:, None], idx]


def _pretrain_contrastive(
    model: Any, tr: PtbxlData, cfg: dict[str, Any], rng: np.random.Generator, progress: bool
) -> list[float]:
    import time

    import torch

    from models.lead_recon import supcon_loss

    ccfg = cfg.get("contrastive", {})
    enc = model.contrastive
    opt = torch.optim.Adam(enc.parameters(), lr=float(ccfg.get("lr", 1e-3)))
    keep = tr.has_label
    x, ids = tr.x[keep], label_ids(tr)[keep]
    bs, crop = int(ccfg.get("batch_size", 64)), int(cfg["train"].get("crop", 320))
    probs = cfg["train"]["mask_mix"]
    t0, losses = time.monotonic(), []
    for epoch in range(int(ccfg.get("epochs", 3))):
        order = rng.permutation(len(x))
        total = 0.0
        enc.train()
        for s in range(0, len(order) - bs + 1, bs):
            b = order[s : s + bs]
            xb = torch.from_numpy(_crops(x[b], crop, rng))
            mb = torch.from_numpy(sample_masks(len(b), rng, probs))
            with torch.no_grad():
                feats = model.features(xb, mb)
            loss = supcon_loss(
                enc(feats), torch.from_numpy(ids[b]), float(ccfg.get("temperature", 0.1))
            )
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            total += float(loss.detach()) * len(b)
        losses.append(total / max(len(order), 1))
        if progress:
            print(
                f"contrastive epoch {epoch + 1}: SupCon loss {losses[-1]:.4f} ({time.monotonic() - t0:.0f} s)"
            )
        if time.monotonic() - t0 > 60 * float(ccfg.get("max_minutes", 2.5)):
            break
    for p in enc.parameters():
        p.requires_grad_(False)
    return losses


def _augmented_crops(
    x: np.ndarray, length: int, rng: np.random.Generator, stretch: float, scale: float
) -> np.ndarray:
    """Random crops resampled in time by a factor in [1 - stretch, 1 + stretch] (heart-rate change, the
    same for all 12 leads) and scaled in amplitude by a factor in [1/(1 + scale), 1 + scale] (log-uniform,
    all leads together: the inter-lead relations stay)."""
    n, t = x.shape[0], x.shape[1]
    span = np.minimum(
        np.round(length * rng.uniform(1.0 - stretch, 1.0 + stretch, size=n)).astype(int), t
    )
    starts = (rng.random(n) * (t - span + 1)).astype(int)
    pos = starts[:, None] + np.linspace(0.0, 1.0, length)[None, :] * (span[:, None] - 1)
    i0 = np.floor(pos).astype(int)
    w = (pos - i0)[:, :, None].astype(np.float32)
    i1 = np.minimum(i0 + 1, t - 1)
    rows = np.arange(n)[:, None]
    out = x[rows, i0] * (1.0 - w) + x[rows, i1] * w
    gain = np.exp(rng.uniform(-np.log1p(scale), np.log1p(scale), size=n)).astype(np.float32)
    return (out * gain[:, None, None]).astype(np.float32)


class _MaskedCrops:
    """Iterable of (x crop, mask) batches with fresh random crops/masks every epoch (optionally
    time-stretched and amplitude-scaled, see :func:`_augmented_crops`, and with the heart axis rotated
    by up to ``rotate_deg`` degrees, see :mod:`training.augment`)."""

    def __init__(
        self,
        x: np.ndarray,
        bs: int,
        crop: int,
        probs: dict[str, float],
        seed: int,
        shuffle: bool = True,
        stretch: float = 0.0,
        scale: float = 0.0,
        rotate_deg: float = 0.0,
        back: np.ndarray | None = None,
    ) -> None:
        self.x, self.bs, self.crop, self.probs, self.shuffle = x, bs, crop, probs, shuffle
        self.stretch, self.scale, self.rotate_deg, self.back = stretch, scale, rotate_deg, back
        if rotate_deg and back is None:
            raise ValueError(
                "rotate_deg needs the back-projection (training.augment.fit_back_projection)"
            )
        self.rng = np.random.default_rng(seed)
        self.fixed = (
            None
            if shuffle
            else (
                _crops(x, crop, self.rng) if crop < x.shape[1] else x,
                sample_masks(len(x), self.rng, probs),
            )
        )

    def __iter__(self) -> Any:
        import torch

        if self.fixed is not None:
            xs, ms = self.fixed
            for s in range(0, len(xs), self.bs):
                yield torch.from_numpy(xs[s : s + self.bs]), torch.from_numpy(ms[s : s + self.bs])
            return
        order = self.rng.permutation(len(self.x))
        for s in range(0, len(order) - self.bs + 1, self.bs):
            b = order[s : s + self.bs]
            xb = (
                _augmented_crops(self.x[b], self.crop, self.rng, self.stretch, self.scale)
                if self.stretch or self.scale
                else _crops(self.x[b], self.crop, self.rng)
            )
            if self.rotate_deg and self.back is not None:
                xb = rotate_heart_axis(
                    xb, random_rotations(len(b), self.rotate_deg, self.rng), self.back
                )
            yield torch.from_numpy(xb), torch.from_numpy(sample_masks(len(b), self.rng, self.probs))

    def __len__(self) -> int:
        return len(self.x) // self.bs


def train(ctx: TaskContext) -> Path:
    """Contrastive pre-training (optional), then masked reconstruction training."""
    import torch

    from training.tasks._ptbxl_anomaly import lead_stats
    from training.trainer import FitConfig, fit, select_device, start_run, write_json

    cfg = ctx.config
    if is_single(cfg):
        return train_single(ctx)
    tcfg = cfg["train"]
    seed = int(tcfg.get("seed", 0))
    tag = "" if cfg["model"].get("use_contrastive", True) else "nocontrastive"
    run_dir = start_run(ctx, NAME, tag, seed=seed)
    rng = np.random.default_rng(seed)
    data = _data(ctx)
    tr, va = data.folds(TRAIN_FOLDS), data.folds(VAL_FOLDS)
    model = build_model(cfg["model"])
    center, scale = lead_stats(tr.x)
    model.norm.set_stats(torch.from_numpy(center), torch.from_numpy(scale))
    contrastive_losses = (
        _pretrain_contrastive(model, tr, cfg, rng, ctx.progress) if model.use_contrastive else []
    )
    bs, crop = int(tcfg.get("batch_size", 32)), int(tcfg.get("crop", 320))
    probs = tcfg["mask_mix"]
    train_loader = _MaskedCrops(tr.x, bs, crop, probs, seed)
    val_loader = _MaskedCrops(va.x, 64, va.x.shape[1], probs, seed + 1, shuffle=False)

    def loss_fn(m: Any, batch: Any) -> Any:
        x, mask = batch
        if m.use_contrastive:
            m.contrastive.eval()  # frozen: BatchNorm statistics too
        out = m(x, mask)
        err = ((m.norm(out) - m.norm(x)) ** 2) * (1.0 - mask[:, None, :])
        return err.sum() / ((1.0 - mask).sum() * x.shape[1]).clamp_min(1.0)

    result = fit(
        model,
        train_loader,
        val_loader,
        loss_fn,
        FitConfig.from_dict(tcfg),
        run_dir,
        select_device(ctx.device),
        ctx.progress,
        desc=NAME,
    )
    model = model.cpu().eval()
    n_eval = int(tcfg.get("val_eval_records", 0)) or len(va)
    val_res = evaluate_arrays(
        lambda x, m: _torch_predict(model, x, m), va.subset(np.arange(min(n_eval, len(va))))
    )
    write_json(
        run_dir / "metrics.json",
        {"validation": val_res, "fit": result.to_dict(), "contrastive_losses": contrastive_losses},
    )
    if ctx.progress:
        print(json.dumps({k: v["mean_pearson"] for k, v in val_res.items()}))
    return run_dir


def single_loss(model: Any, x: Any, mask: Any, corr_weight: float) -> Any:
    """MSE (normalised units) + ``corr_weight`` * (1 - Pearson r per record and lead) over the 11 leads
    that are not the source II (the evaluation metric is the per-record Pearson r)."""
    from models.lead_recon import SOURCE_II

    tgt = [j for j in range(12) if j != SOURCE_II]
    zo, zx = model.norm(model(x, mask))[:, :, tgt], model.norm(x)[:, :, tgt]
    mse = ((zo - zx) ** 2).mean()
    oc, xc = zo - zo.mean(dim=1, keepdim=True), zx - zx.mean(dim=1, keepdim=True)
    r = (oc * xc).sum(dim=1) / ((oc**2).sum(dim=1) * (xc**2).sum(dim=1) + 1e-6).sqrt()
    return mse + corr_weight * (1.0 - r).mean()


def train_single(ctx: TaskContext) -> Path:
    """The dedicated lead-II model (``--set variant=single``): same folds, masks always {II}, loss
    :func:`single_loss`, best epoch on fold 9."""
    import torch

    from training.errors import ConfigError
    from training.tasks._ptbxl_anomaly import lead_stats
    from training.trainer import FitConfig, fit, select_device, start_run, write_json

    cfg = ctx.config
    scfg = cfg["single"]
    tcfg = scfg["train"]
    seed = int(tcfg.get("seed", 0))
    run_dir = start_run(ctx, NAME, "ii", seed=seed)
    data = _data(ctx)
    tr, va = data.folds(TRAIN_FOLDS), data.folds(VAL_FOLDS)
    model = build_single_model(scfg["model"])
    center, scale = lead_stats(tr.x)
    model.norm.set_stats(torch.from_numpy(center), torch.from_numpy(scale))
    init_from = tcfg.get("init_from")
    if (
        init_from
    ):  # continue a previous single run (same folds; a run without the GRU context may gain one)
        missing, unexpected = model.load_state_dict(
            torch.load(Path(init_from) / "checkpoint.pt", map_location="cpu", weights_only=True),
            strict=False,
        )
        if unexpected or any(not k.startswith("gru") for k in missing):
            raise ConfigError(
                f"init_from {init_from}: architecture differs (missing {missing}, unexpected {unexpected})"
            )
    probs = {"II_only": 1.0}
    aug = tcfg.get("augment") or {}
    rotate_deg = float(aug.get("rotate_deg", 0.0))
    train_loader = _MaskedCrops(
        tr.x,
        int(tcfg.get("batch_size", 32)),
        int(tcfg.get("crop", 500)),
        probs,
        seed,
        stretch=float(aug.get("stretch", 0.0)),
        scale=float(aug.get("scale", 0.0)),
        rotate_deg=rotate_deg,
        back=fit_back_projection(tr.x) if rotate_deg else None,
    )
    val_loader = _MaskedCrops(va.x, 64, va.x.shape[1], probs, seed + 1, shuffle=False)
    w = float(tcfg.get("corr_weight", 1.0))

    def loss_fn(m: Any, batch: Any) -> Any:
        return single_loss(m, batch[0], batch[1], w)

    result = fit(
        model,
        train_loader,
        val_loader,
        loss_fn,
        FitConfig.from_dict(tcfg),
        run_dir,
        select_device(ctx.device),
        ctx.progress,
        desc=f"{NAME}_ii",
    )
    model = model.cpu().eval()
    val_res = evaluate_arrays(lambda x, m: _torch_predict(model, x, m), va, configs=("II_only",))
    write_json(run_dir / "metrics.json", {"validation": val_res, "fit": result.to_dict()})
    if ctx.progress:
        print(json.dumps({k: v["mean_pearson"] for k, v in val_res.items()}))
    return run_dir


def _torch_predict(model: Any, x: np.ndarray, mask: np.ndarray) -> np.ndarray:
    from training.trainer import predict_batches

    (out,) = predict_batches(model, (x, mask), batch=64)
    return derive_limb_leads(np.where(mask[:, None, :] > 0, x, out), mask)[0]


def _lead_metrics(y: np.ndarray, yhat: np.ndarray) -> dict[str, float]:
    """y, yhat [n, T] of one lead."""
    rmse = float(np.sqrt(np.mean((y - yhat) ** 2)))
    yc = y - y.mean(axis=1, keepdims=True)
    r2 = float(1.0 - np.sum((y - yhat) ** 2) / max(float(np.sum(yc**2)), 1e-12))
    hc = yhat - yhat.mean(axis=1, keepdims=True)
    den = np.sqrt(np.sum(yc**2, axis=1) * np.sum(hc**2, axis=1))
    ok = den > 1e-12
    r = np.sum(yc * hc, axis=1)[ok] / den[ok]
    return {"rmse": rmse, "r2": r2, "pearson": float(np.mean(r)) if r.size else float("nan")}


def evaluate_arrays(
    predict: Any, d: PtbxlData, configs: tuple[str, ...] = ("I_II_V4", "II_only", "leave_one_out")
) -> dict[str, Any]:
    """The evaluation configurations (default all three) on ``d`` with ``predict(x, mask) -> full 12 leads``."""
    n = len(d)
    out: dict[str, Any] = {}
    for conf in (c for c in ("I_II_V4", "II_only") if c in configs):
        present = [IDX[lead] for lead in CONFIGURATIONS[conf]]
        mask = np.zeros((n, 12), dtype=np.float32)
        mask[:, present] = 1.0
        pred = predict(d.x, mask)
        _, derived = derive_limb_leads(pred, mask)
        per_lead: dict[str, Any] = {}
        derived_leads: dict[str, Any] = {}
        for j, lead in enumerate(TWELVE_LEADS):
            if j in present:
                continue
            m = _lead_metrics(d.x[:, :, j], pred[:, :, j])
            (derived_leads if derived[0, j] else per_lead)[lead] = m
        out[conf] = {
            "inputs": list(CONFIGURATIONS[conf]),
            "per_lead": per_lead,
            "derived": derived_leads,
            "mean_pearson": float(np.mean([v["pearson"] for v in per_lead.values()])),
            "mean_rmse": float(np.mean([v["rmse"] for v in per_lead.values()])),
            "mean_r2": float(np.mean([v["r2"] for v in per_lead.values()])),
        }
    if "leave_one_out" not in configs:
        return out
    per_lead, derived_leads = {}, {}
    for j, lead in enumerate(TWELVE_LEADS):
        mask = np.ones((n, 12), dtype=np.float32)
        mask[:, j] = 0.0
        pred = predict(d.x, mask)
        m = _lead_metrics(d.x[:, :, j], pred[:, :, j])
        (derived_leads if lead in LIMB_LEADS else per_lead)[lead] = m
    out["leave_one_out"] = {
        "inputs": "the other 11 leads",
        "per_lead": per_lead,
        "derived": derived_leads,
        "mean_pearson": float(np.mean([v["pearson"] for v in per_lead.values()])),
        "mean_rmse": float(np.mean([v["rmse"] for v in per_lead.values()])),
        "mean_r2": float(np.mean([v["r2"] for v in per_lead.values()])),
    }
    return out


def _load_run(ctx: TaskContext) -> tuple[Any, Path, dict[str, Any]]:
    from training.trainer import latest_run_dir

    return _load_run_dir(ctx.run_dir or latest_run_dir(ctx.runs_dir, NAME))


def _load_run_dir(run_dir: Path) -> tuple[Any, Path, dict[str, Any]]:
    import torch

    from training.errors import ConfigError

    if not (run_dir / "checkpoint.pt").is_file():
        raise ConfigError(f"{run_dir} is not a trained {NAME} run (no checkpoint.pt)")
    cfg = json.loads((run_dir / "config.json").read_text())
    model = _build(cfg)
    model.load_state_dict(
        torch.load(run_dir / "checkpoint.pt", map_location="cpu", weights_only=True)
    )
    return model.eval(), run_dir, cfg


def evaluate(ctx: TaskContext) -> dict[str, Any]:
    """Fold-10 figures from the committed ONNX (default) or a run's checkpoint (``--source checkpoint``)."""
    from training.trainer import write_json

    test = _data(ctx).folds(TEST_FOLDS)
    if ctx.extra.get("source", "onnx") == "checkpoint":
        model, run_dir, cfg = _load_run(ctx)
        single = is_single(cfg)
        res = evaluate_arrays(
            lambda x, m: _torch_predict(model, x, m),
            test,
            configs=("II_only",) if single else ("I_II_V4", "II_only", "leave_one_out"),
        )
        res.update(
            {
                "source": "checkpoint",
                "run_dir": str(run_dir),
                "variant": "single" if single else "multi",
                "use_contrastive": (not single) and bool(cfg["model"].get("use_contrastive", True)),
            }
        )
        write_json(run_dir / "test_metrics.json", res)
    else:
        from models.runtime.lead_recon import LeadReconModel

        onnx_model = LeadReconModel.load(models_dir=ctx.artifacts_dir)
        res = evaluate_arrays(lambda x, m: onnx_model.predict(x, m).leads, test)
        res.update(
            {
                "source": "onnx",
                "onnx_sha256": onnx_model.card.onnx_sha256,
                "use_contrastive": bool(
                    onnx_model.card.get("config", {}).get("model", {}).get("use_contrastive", True)
                ),
            }
        )
        for conf in ("I_II_V4", "II_only", "leave_one_out"):
            present = np.zeros(12, dtype=np.float32)
            present[[IDX[lead] for lead in CONFIGURATIONS[conf]] or list(range(1, 12))] = 1.0
            used = onnx_model.model_for(present)
            res[conf].update(
                {
                    "artifact": used.onnx_path.name,
                    "onnx_sha256": used.card.onnx_sha256,
                    "use_contrastive": bool(
                        used.card.get("config", {}).get("model", {}).get("use_contrastive", False)
                    ),
                }
            )
            if used is not onnx_model:
                res[conf]["blend"] = used.card.get("blend")
    res.update(
        {
            "model": NAME,
            "split": "PTB-XL strat_fold 10 (test)",
            "n_records": len(test),
            "published_reference": {"I_II_V4 mean precordial r": 0.846, "II_only mean r": 0.7885},
        }
    )
    return res


def export(ctx: TaskContext) -> Path:
    """ONNX (inputs ``ecg`` [B,1000,12] mV, ``mask`` [B,12]) + card."""
    from models.export import export_with_card

    model, run_dir, cfg = _load_run(ctx)
    val = _data(ctx).folds(VAL_FOLDS)
    rng = np.random.default_rng(0)
    xs = val.x[:64]
    run_metrics = json.loads((run_dir / "metrics.json").read_text())
    if is_single(cfg):
        return _export_single(ctx, model, run_dir, cfg, val, run_metrics)
    masks = sample_masks(len(xs), rng, cfg["train"]["mask_mix"])
    path = Path(ctx.artifacts_dir) / f"{NAME}.onnx"
    export_with_card(
        model,
        path,
        {"ecg": xs, "mask": masks},
        ["recon"],
        {
            "task": "reconstruction of missing ECG leads from any present subset (12-lead, PTB-XL)",
            "input": {
                "ecg": "[B,1000,12] filtered mV (stream filter_signal, 100 Hz, 10 s), TWELVE_LEADS order; "
                "values of missing leads are ignored",
                "mask": "[B,12] 1 = lead present",
            },
            "output": {
                "recon": "[B,1000,12] mV for every lead; the runtime wrapper copies present leads and "
                "derives limb leads exactly (III = II - I, aVR = -(I+II)/2, aVL = I - II/2, aVF = II - I/2) "
                "whenever two limb leads are present"
            },
            "normalisation": {
                "where": "inside the ONNX graph",
                "rule": "per lead (x - median) / (IQR/1.349) over "
                "training records (PTB-XL folds 1-8)",
                "center": model.norm.center.numpy().tolist(),
                "scale": model.norm.scale.numpy().tolist(),
            },
            "training_data": {
                "dataset": "PTB-XL 1.0.3 records100 subset",
                "split": "strat_fold 1-8 train, 9 validation, 10 test",
            },
            "config": cfg,
            "validation_metrics": run_metrics.get("validation"),
            "run_dir": str(run_dir),
            "command": ctx.command,
        },
        tolerance=1e-3,
        contract=CARDS[path.stem],
    )
    return path


def _select_blend(ctx: TaskContext, va: PtbxlData, ps: np.ndarray) -> dict[str, Any]:
    """Weight of the dedicated model (its fold-9 output ``ps``) against the general ``lead_recon.onnx`` on
    {II} windows, chosen on fold 9 (``va``).

    The wrapper outputs ``w * dedicated + (1 - w) * general`` for I and V1-V6, limb leads from that I
    and the recorded II. ``w`` is the grid value with the best fold-9 mean Pearson r (1 = dedicated
    model alone, also when no general artifact is there)."""
    from models.runtime.lead_recon import LeadReconModel, blend_single

    grid = [
        float(w) for w in ctx.config.get("single", {}).get("blend_grid", [1.0])
    ]  # export-time option
    general_path = Path(ctx.artifacts_dir) / f"{NAME}.onnx"
    if grid == [1.0] or not general_path.is_file():
        return {"weight": 1.0, "method": "dedicated model alone"}
    mask = _ii_masks(len(va))
    general = LeadReconModel(general_path)  # the general model alone (no routing)
    pg = np.concatenate(
        [
            general.run({"ecg": va.x[s : s + 64], "mask": mask[s : s + 64]})["recon"]
            for s in range(0, len(va), 64)
        ]
    )
    scores = {
        w: _ii_mean_pearson(va.x, blend_single(np.where(mask[:, None, :] > 0, va.x, ps), pg, w))
        for w in grid
    }
    best = max(scores, key=lambda k: scores[k])
    return {
        "weight": best,
        "with": f"{NAME}.onnx",
        "method": "grid value with the best mean Pearson r of II_only on "
        "PTB-XL fold 9 (validation)",
        "validation_mean_pearson": {str(k): v for k, v in scores.items()},
    }


def _predict_arrays(model: Any, arrays: tuple[np.ndarray, ...]) -> list[np.ndarray]:
    from training.trainer import predict_batches

    return predict_batches(model, arrays, batch=64)


def _ii_masks(n: int) -> np.ndarray:
    """``[n, 12]`` presence masks with lead II alone."""
    mask = np.zeros((n, 12), dtype=np.float32)
    mask[:, IDX["II"]] = 1.0
    return mask


def _ii_mean_pearson(y: np.ndarray, pred: np.ndarray) -> float:
    """Mean over the 11 leads other than II of the per-record Pearson r (the ``II_only`` figure)."""
    return float(
        np.mean(
            [
                _lead_metrics(y[:, :, j], pred[:, :, j])["pearson"]
                for j in range(12)
                if j != IDX["II"]
            ]
        )
    )


def _select_ensemble(
    ctx: TaskContext, model: Any, run_dir: Path, cfg: dict[str, Any], va: PtbxlData
) -> tuple[Any, dict[str, Any] | None]:
    """With ``single.ensemble`` (export-time option: more lead-II run directories), the members of a
    :class:`~models.lead_recon.LeadReconIIEnsemble`, chosen on fold 9 by greedy forward selection: the
    candidates (``--run`` and the listed runs) in order of their own fold-9 mean Pearson r, each kept
    when adding it raises the average's. Returns ``(model, ensemble card section or None)``."""
    from models.lead_recon import LeadReconIIEnsemble
    from training.errors import ConfigError

    extra = [Path(p) for p in (ctx.config.get("single", {}).get("ensemble") or [])]
    if not extra:
        return model, None
    candidates: dict[str, tuple[Any, dict[str, Any]]] = {str(run_dir): (model, cfg)}
    for p in extra:
        m, _, c = _load_run_dir(p.resolve())
        if not is_single(c):
            raise ConfigError(
                f"{p} is not a lead-II run (variant=single); it cannot join the lead_recon_ii ensemble"
            )
        candidates[str(p.resolve())] = (m, c)
    mask = _ii_masks(len(va))
    preds = {k: _predict_arrays(m, (va.x, mask))[0] for k, (m, _) in candidates.items()}
    own = {k: _ii_mean_pearson(va.x, p) for k, p in preds.items()}
    order = sorted(own, key=lambda k: -own[k])
    chosen, best, steps = [order[0]], own[order[0]], []
    for k in order[1:]:
        score = _ii_mean_pearson(va.x, np.mean([preds[c] for c in [*chosen, k]], axis=0))
        steps.append({"candidate": k, "validation_mean_pearson": score, "kept": score > best})
        if score > best:
            chosen.append(k)
            best = score
    members = [candidates[k][0] for k in chosen]
    ens = LeadReconIIEnsemble(members) if len(members) > 1 else members[0]
    info = {
        "method": "greedy forward selection on PTB-XL fold 9 (validation): candidates in order of their own mean "
        "Pearson r of II_only, each kept when adding it raises the averaged output's",
        "members": [
            {
                "run_dir": k,
                "seed": candidates[k][1]["single"]["train"].get("seed"),
                "command": candidates[k][1].get("command"),
                "validation_mean_pearson": own[k],
            }
            for k in chosen
        ],
        "candidates_validation_mean_pearson": own,
        "selection_steps": steps,
        "validation_mean_pearson": best,
    }
    return ens, info


def _export_single(
    ctx: TaskContext,
    model: Any,
    run_dir: Path,
    cfg: dict[str, Any],
    va: PtbxlData,
    run_metrics: dict[str, Any],
) -> Path:
    """``lead_recon_ii.onnx`` + card: the dedicated model the runtime wrapper uses when only II is present
    (one run, or an ensemble of runs with ``single.ensemble``); ``va`` is fold 9."""
    from models.export import export_with_card

    xs = va.x[:64]
    masks = _ii_masks(len(xs))
    path = Path(ctx.artifacts_dir) / f"{NAME}_ii.onnx"
    model, ensemble = _select_ensemble(ctx, model, run_dir, cfg, va)
    (ps,) = _predict_arrays(
        model, (va.x, _ii_masks(len(va)))
    )  # fold-9 output, read by the validation figures and the blend
    if ensemble is not None:
        run_metrics = {
            **run_metrics,
            "validation": evaluate_arrays(
                lambda x, m: derive_limb_leads(np.where(m[:, None, :] > 0, x, ps), m)[0],
                va,
                configs=("II_only",),
            ),
        }
    blend = _select_blend(ctx, va, ps)
    export_with_card(
        model,
        path,
        {"ecg": xs, "mask": masks},
        ["recon"],
        {
            "task": "reconstruction of the 11 other ECG leads from lead II alone (12-lead, PTB-XL)",
            "present_leads": ["II"],
            "input": {
                "ecg": "[B,1000,12] filtered mV (stream filter_signal, 100 Hz, 10 s), TWELVE_LEADS order; "
                "only lead II is read",
                "mask": "[B,12]; the wrapper routes here the windows whose only present lead is II",
            },
            "output": {
                "recon": "[B,1000,12] mV; I and V1-V6 from the network, III = II - I, aVR = -(I+II)/2, "
                "aVL = I - II/2, aVF = II - I/2 computed in the graph from the predicted I and the recorded II"
            },
            "architecture": ("average of several " if ensemble else "")
            + "dedicated single-lead model (models.lead_recon.LeadReconII): dilated residual conv net at "
            "50 Hz over lead II, time-averaged record context, per-lead conv decoders. It has NO "
            "contrastive branch (the contrastive ablation applies to the multi-subset lead_recon.onnx only).",
            "ensemble": ensemble,
            "loss": "MSE (normalised units) + corr_weight * (1 - per-record Pearson r), over the 11 target leads",
            "blend": blend,
            "normalisation": {
                "where": "inside the ONNX graph",
                "rule": "per lead (x - median) / (IQR/1.349) over "
                "training records (PTB-XL folds 1-8)",
                "center": model.norm.center.numpy().tolist(),
                "scale": model.norm.scale.numpy().tolist(),
            },
            "training_data": {
                "dataset": "PTB-XL 1.0.3 records100 subset",
                "split": "strat_fold 1-8 train, 9 validation (best epoch), 10 test",
            },
            "config": {
                "variant": cfg.get("variant"),
                "single": cfg["single"],
                "data": cfg.get("data"),
            },
            "validation_metrics": run_metrics.get("validation"),
            "fit": run_metrics.get("fit"),
            "run_dir": str(run_dir),
            "command": ctx.command,
        },
        tolerance=1e-3,
        contract=CARDS[path.stem],
    )
    return path


def prepare(ctx: TaskContext) -> dict[str, Any]:
    d = _data(ctx)
    return {
        f: len(d.folds(v))
        for f, v in (("train", TRAIN_FOLDS), ("validation", VAL_FOLDS), ("test", TEST_FOLDS))
    }


def report(ctx: TaskContext) -> dict[str, Any]:
    """Per-lead reconstruction figures on fold-10 records for (a) and (b)."""
    from models.runtime.lead_recon import LeadReconModel
    from training.tasks._figures import plot_lead_reconstruction

    model = LeadReconModel.load(models_dir=ctx.artifacts_dir)
    test = _data(ctx).folds(TEST_FOLDS)
    out_dir = Path(ctx.runs_dir) / NAME / "report"
    out_dir.mkdir(parents=True, exist_ok=True)
    figures = []
    i = int(np.flatnonzero(test.normal)[0])
    j = int(np.flatnonzero(~test.normal & test.has_label)[0])
    for conf in ("I_II_V4", "II_only"):
        mask = np.zeros(12, dtype=np.float32)
        mask[[IDX[lead] for lead in CONFIGURATIONS[conf]]] = 1
        targets = [k for k in range(12) if mask[k] == 0]
        for rec, label in ((i, "norm"), (j, "abnormal")):
            pred = model.predict(test.x[rec], mask)
            path = out_dir / f"lead_recon_{conf}_{label}.png"
            plot_lead_reconstruction(
                test.x[rec],
                pred.leads[0],
                targets,
                path,
                f"lead_recon {conf}: PTB-XL ecg_id {int(test.ecg_id[rec])} ({label})",
            )
            figures.append(str(path))
    return {"model": NAME, "figures": figures}


SPEC = ModelSpec(
    name=NAME,
    description="Missing-lead reconstruction (contrastive + raw-lead fusion, per-lead conv decoders), PTB-XL",
    prepare=prepare,
    train=train,
    evaluate=evaluate,
    export=export,
    report=report,
    cards=CARDS,
)
