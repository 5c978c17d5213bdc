"""``beat_vae``: single-lead cardiac-cycle VAE on LUDB (400 samples, 25-dim latent, FC, MSE + beta KL).

Data: :mod:`training.datasets.ludb` (all 200 records, every lead, stream filter, ``beat_cycles``),
z-scored per beat. Split by patient (LUDB: one record per patient): 140 train / 30 validation /
30 test record ids (seeded shuffle). Early stopping on the validation patients' loss.

MMD protocol (``evaluate beat_vae --json`` -> ``protocol``): held-out = the 30 test patients, all 12
leads; ``n`` real beats drawn without replacement (seed 0) and split into two disjoint halves A and B
of ``n/2``; Gaussian kernel with sigma = median pairwise distance of A u B; unbiased MMD^2;
``mmd_reconstruction`` = MMD^2(decoder(mu(A)), B), ``mmd_prior`` = MMD^2(decoder(z), B) with ``n/2``
draws z ~ N(0, I) (seed 1), ``mmd_real_vs_real`` = MMD^2(A, B) (the floor of the estimator);
p-values from ``permutations`` permutations of the pooled samples.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from models.card import BEAT_400
from models.card import contract as card_contract
from training.datasets.ludb import (
    AFTER_S,
    BEFORE_S,
    SPLIT_SEED,
    load_ludb_beats,
    patient_split,
    record_ids,
    zscore_beats,
)
from training.registry import ModelSpec, TaskContext

NAME = "beat_vae"
#: the typed card contract (the stream scores beat_400 cycles with it)
CARDS = {
    NAME: card_contract(
        "scorer", "beat_vae", BEAT_400, {"method": "zscore", "eps": 1e-3, "where": "runtime"}
    )
}


def _split(ctx: TaskContext) -> dict[str, list[int]]:
    ids = record_ids(ctx.data_dir)
    limit = ctx.config.get("data", {}).get("limit")
    sp = patient_split(ids, SPLIT_SEED)
    if limit:
        sp = {k: v[: max(2, int(limit))] for k, v in sp.items()}
    return sp


def _beats(ctx: TaskContext, ids: list[int]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    d = load_ludb_beats(ctx.data_dir, ids)
    return zscore_beats(d.beats), d.record, d.lead


def build_model(mcfg: dict[str, Any]) -> Any:
    from models.beat_vae import BeatVAE

    return BeatVAE(hidden=tuple(mcfg.get("hidden", (512, 256))), latent=int(mcfg.get("latent", 25)))


def train(ctx: TaskContext) -> Path:
    import torch
    from torch.utils.data import DataLoader

    from training.trainer import FitConfig, fit, select_device, start_run, write_json

    cfg = ctx.config
    tcfg = cfg["train"]
    run_dir = start_run(ctx, NAME, seed=int(tcfg.get("seed", 0)))
    sp = _split(ctx)
    xtr, _, _ = _beats(ctx, sp["train"])
    xva, _, _ = _beats(ctx, sp["validation"])
    write_json(run_dir / "split.json", sp)
    model = build_model(cfg["model"])
    beta = float(tcfg.get("beta", 1e-3))
    bs = int(tcfg.get("batch_size", 128))
    gen = torch.Generator().manual_seed(int(tcfg.get("seed", 0)))
    train_loader: DataLoader[torch.Tensor] = DataLoader(
        torch.from_numpy(xtr),  # type: ignore[arg-type]  # a Tensor is a map-style dataset
        batch_size=bs,
        shuffle=True,
        generator=gen,
        drop_last=len(xtr) > bs,
    )
    val_loader: DataLoader[torch.Tensor] = DataLoader(torch.from_numpy(xva), batch_size=1024)  # type: ignore[arg-type]

    def loss_fn(m: Any, batch: Any) -> Any:
        rec, kl = m.loss_terms(batch)
        return (rec + beta * kl).mean()

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
    val = mmd_report(
        lambda b: _torch_recon(model, b), lambda z: _torch_decode(model, z), xva, cfg["mmd"]
    )
    write_json(
        run_dir / "metrics.json",
        {
            "validation": val,
            "fit": result.to_dict(),
            "n_train_beats": len(xtr),
            "n_val_beats": len(xva),
        },
    )
    if ctx.progress:
        print(
            json.dumps(
                {
                    k: val[k]
                    for k in ("mmd_reconstruction", "mmd_prior", "mmd_real_vs_real", "recon_mse")
                }
            )
        )
    return run_dir


def _torch_recon(model: Any, beats: np.ndarray) -> np.ndarray:
    import torch

    with torch.no_grad():
        mu, _ = model.encode(torch.from_numpy(beats))
        return model.decoder(mu).numpy()


def _torch_decode(model: Any, z: np.ndarray) -> np.ndarray:
    import torch

    with torch.no_grad():
        return model.decoder(torch.from_numpy(z)).numpy()


def mmd_report(
    recon: Any, decode: Any, real: np.ndarray, mcfg: dict[str, Any], permutations: int | None = None
) -> dict[str, Any]:
    """MMD figures under the module's protocol; ``recon(beats)`` and ``decode(z)`` are the model."""
    from training.mmd import median_bandwidth, mmd_test

    n = min(int(mcfg.get("n", 1000)), len(real) - len(real) % 2)
    perms = int(mcfg.get("permutations", 500)) if permutations is None else permutations
    rng = np.random.default_rng(int(mcfg.get("seed", 0)))
    idx = rng.choice(len(real), size=n, replace=False)
    a, b = real[idx[: n // 2]], real[idx[n // 2 :]]
    sigma = median_bandwidth(np.concatenate([a, b]))
    ra = recon(a)
    z = (
        np.random.default_rng(int(mcfg.get("seed", 0)) + 1)
        .standard_normal((n // 2, 25))
        .astype(np.float32)
    )
    gen = decode(z)
    m_rec, p_rec = mmd_test(ra, b, sigma, perms, seed=2)
    m_pri, p_pri = mmd_test(gen, b, sigma, perms, seed=3)
    m_real, p_real = mmd_test(a, b, sigma, perms, seed=4)
    return {
        "mmd_reconstruction": m_rec,
        "mmd_prior": m_pri,
        "mmd_real_vs_real": m_real,
        "p_value": {"reconstruction": p_rec, "prior": p_pri, "real_vs_real": p_real},
        "recon_mse": float(np.mean((ra - a) ** 2)),
        "sigma": sigma,
        "n_per_sample": n // 2,
        "permutations": perms,
    }


def protocol(mcfg: dict[str, Any], test_ids: list[int], n_available: int) -> dict[str, Any]:
    return {
        "data": "LUDB 1.0.1, 500 Hz, stream filter_signal 0.5-40 Hz, N annotations of each lead's own file, "
        f"beat_cycles({BEFORE_S} s before, {AFTER_S} s after R, resampled to 400)",
        "normalisation": "per-beat z-score: (b - mean(b)) / (std(b) + 1e-3 mV); MMD computed in these units",
        "held_out_patients": test_ids,
        "held_out_beats_available": n_available,
        "leads": "all 12",
        "sample": f"{mcfg.get('n', 1000)} real held-out beats drawn without replacement (seed {mcfg.get('seed', 0)}), "
        "split into disjoint halves A and B",
        "kernel": "Gaussian exp(-||x-y||^2 / (2 sigma^2))",
        "bandwidth": "sigma = median pairwise Euclidean distance of A u B (real beats only)",
        "estimator": "unbiased MMD^2 (Gretton et al. 2012)",
        "mmd_reconstruction": "MMD^2(decoder(mu(A)), B)",
        "mmd_prior": "MMD^2(decoder(z), B), z ~ N(0, I_25), |z| = |B| (seed +1)",
        "mmd_real_vs_real": "MMD^2(A, B): estimator floor",
        "p_value": f"permutation test, {mcfg.get('permutations', 500)} permutations of the pooled pair, "
        "(1 + #{perm >= observed}) / (1 + permutations); large p = indistinguishable from real beats",
    }


def evaluate(ctx: TaskContext) -> dict[str, Any]:
    """MMD on the held-out patients from the committed ONNX (default) or a checkpoint."""
    sp = _split(ctx)
    xte, _, _ = _beats(ctx, sp["test"])
    mcfg = ctx.config["mmd"]
    if ctx.extra.get("source", "onnx") == "checkpoint":
        model, run_dir = _load_run(ctx)
        res = mmd_report(
            lambda b: _torch_recon(model, b), lambda z: _torch_decode(model, z), xte, mcfg
        )
        res.update({"source": "checkpoint", "run_dir": str(run_dir)})
    else:
        from models.runtime.beat_vae import BeatVaeModel

        onnx_model = BeatVaeModel.load(models_dir=ctx.artifacts_dir)
        res = mmd_report(lambda b: onnx_model.predict(b).recon, onnx_model.decode, xte, mcfg)
        res.update({"source": "onnx", "onnx_sha256": onnx_model.card.onnx_sha256})
    res["protocol"] = protocol(mcfg, sp["test"], len(xte))
    res.update(
        {
            "model": NAME,
            "reference": {"Kuznetsov et al. 2021 MMD": 3.83e-3},
            "goal_met": res["mmd_reconstruction"] <= 3.83e-3,
        }
    )
    return res


def _load_run(ctx: TaskContext) -> tuple[Any, Path]:
    import torch

    from training.trainer import latest_run_dir

    run_dir = ctx.run_dir or latest_run_dir(ctx.runs_dir, NAME)
    cfg = json.loads((run_dir / "config.json").read_text())
    model = build_model(cfg["model"])
    model.load_state_dict(
        torch.load(run_dir / "checkpoint.pt", map_location="cpu", weights_only=True)
    )
    return model.eval(), run_dir


def export(ctx: TaskContext) -> Path:
    from models.export import export_with_card

    model, run_dir = _load_run(ctx)
    cfg = json.loads((run_dir / "config.json").read_text())
    sp = _split(ctx)
    xva, _, _ = _beats(ctx, sp["validation"][:5])
    z = np.random.default_rng(0).standard_normal((len(xva[:256]), 25)).astype(np.float32)
    run_metrics = json.loads((run_dir / "metrics.json").read_text())
    path = Path(ctx.artifacts_dir) / f"{NAME}.onnx"
    export_with_card(
        model,
        path,
        {"beat": xva[:256], "z": z},
        ["recon", "mu", "logvar", "decoded"],
        {
            "task": "single-lead cardiac-cycle VAE (LUDB), 25-dim latent",
            "input": {
                "beat": "[B,400] one cycle, 0.25 s before to 0.45 s after the R peak resampled to 400 "
                "samples, filtered (stream filter_signal), z-scored per beat",
                "z": "[B2,25] latent codes to decode",
            },
            "outputs_doc": {
                "recon": "[B,400] decoder(mu)",
                "mu": "[B,25]",
                "logvar": "[B,25]",
                "decoded": "[B2,400] decoder(z)",
            },
            "normalisation": "per-beat z-score (b - mean(b)) / (std(b) + 1e-3 mV), outside the graph "
            "(models.runtime.beat_vae.normalise)",
            "training_data": {"dataset": "LUDB 1.0.1 (200 records, 12 leads)", "split": sp},
            "mmd_protocol": protocol(cfg["mmd"], sp["test"], -1),
            "config": cfg,
            "validation_metrics": run_metrics.get("validation"),
            "run_dir": str(run_dir),
            "command": ctx.command,
        },
        dynamic_axes={
            "beat": {0: "batch"},
            "z": {0: "n_latent"},
            "recon": {0: "batch"},
            "mu": {0: "batch"},
            "logvar": {0: "batch"},
            "decoded": {0: "n_latent"},
        },
        contract=CARDS[NAME],
    )
    return path


def prepare(ctx: TaskContext) -> dict[str, Any]:
    sp = _split(ctx)
    return {k: {"patients": len(v), "beats": len(_beats(ctx, v)[0])} for k, v in sp.items()}


def report(ctx: TaskContext) -> dict[str, Any]:
    """PCA of real / reconstructed / prior beats, latent interpolation, reconstruction examples."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from sklearn.decomposition import PCA

    from models.runtime.beat_vae import BeatVaeModel
    from stream.records import TWELVE_LEADS

    model = BeatVaeModel.load(models_dir=ctx.artifacts_dir)
    sp = _split(ctx)
    xte, rec, lead = _beats(ctx, sp["test"])
    out_dir = Path(ctx.runs_dir) / NAME / "report"
    out_dir.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    idx = rng.choice(len(xte), size=min(1000, len(xte)), replace=False)
    real = xte[idx]
    recon = model.predict(real).recon
    prior = model.sample(len(real), seed=1)
    pca = PCA(n_components=2).fit(real)
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.5), sharex=True, sharey=True)
    pr = pca.transform(real)
    for ax, (label, arr, color) in zip(
        axes,
        (
            ("real held-out", real, "k"),
            ("reconstructed", recon, "tab:red"),
            ("prior samples", prior, "tab:blue"),
        ),
        strict=True,
    ):
        ax.scatter(pr[:, 0], pr[:, 1], s=4, c="lightgrey", label="real held-out")
        p = pca.transform(arr)
        ax.scatter(p[:, 0], p[:, 1], s=4, c=color, alpha=0.6, label=label)
        ax.set_title(label)
        ax.set_xlabel(f"PC1 ({pca.explained_variance_ratio_[0]:.0%})")
    axes[0].set_ylabel(f"PC2 ({pca.explained_variance_ratio_[1]:.0%})")
    fig.suptitle("beat_vae: PCA (fit on real held-out beats, 30 test patients, z-scored)")
    fig.tight_layout()
    pca_path = out_dir / "beat_vae_pca.png"
    fig.savefig(pca_path, dpi=90)
    plt.close(fig)

    i, j = int(idx[0]), int(np.flatnonzero(rec != rec[idx[0]])[0])
    enc = model.predict(xte[[i, j]])
    steps = np.linspace(0, 1, 8)[:, None]
    zs = (1 - steps) * enc.mu[0] + steps * enc.mu[1]
    beats = model.decode(zs.astype(np.float32))
    fig, axes = plt.subplots(1, len(steps), figsize=(2.2 * len(steps), 2.6), sharey=True)
    for k, ax in enumerate(axes):
        ax.plot(beats[k], color=plt.cm.viridis(k / (len(steps) - 1)))
        if k == 0:
            ax.plot(xte[i], "k:", lw=0.8)
        if k == len(steps) - 1:
            ax.plot(xte[j], "k:", lw=0.8)
        ax.set_title(f"t={float(steps[k, 0]):.2f}", fontsize=8)
        ax.set_xticks([])
    fig.suptitle(
        f"latent interpolation: LUDB {int(rec[i])}/{TWELVE_LEADS[int(lead[i])]} -> {int(rec[j])}/{TWELVE_LEADS[int(lead[j])]} (dotted: real beats)"
    )
    fig.tight_layout()
    interp_path = out_dir / "beat_vae_interpolation.png"
    fig.savefig(interp_path, dpi=90)
    plt.close(fig)

    fig, axes = plt.subplots(2, 4, figsize=(14, 5))
    for ax, k in zip(axes.reshape(-1), idx[:8], strict=True):
        ax.plot(xte[k], "k", lw=0.9, label="real")
        ax.plot(model.predict(xte[k]).recon[0], "r", lw=0.9, label="reconstruction")
        ax.set_title(f"LUDB {int(rec[k])} lead {TWELVE_LEADS[int(lead[k])]}", fontsize=8)
    axes[0, 0].legend(fontsize=7)
    fig.tight_layout()
    ex_path = out_dir / "beat_vae_reconstructions.png"
    fig.savefig(ex_path, dpi=90)
    plt.close(fig)
    return {
        "model": NAME,
        "figures": [str(pca_path), str(interp_path), str(ex_path)],
        "pca_explained_variance": pca.explained_variance_ratio_.tolist(),
    }


SPEC = ModelSpec(
    name=NAME,
    description="Single-lead beat VAE on LUDB (400 samples, 25-d latent), judged by MMD",
    prepare=prepare,
    train=train,
    evaluate=evaluate,
    export=export,
    report=report,
    cards=CARDS,
)
