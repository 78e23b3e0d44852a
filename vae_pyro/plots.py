"""Plots for people who would rather look than read. Matplotlib with the non-interactive Agg backend
(no display needed); every function takes plain data and a path and returns the path."""

from __future__ import annotations

from pathlib import Path
from typing import Mapping, Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402

from . import distributed  # noqa: E402


def _save(fig, path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    if distributed.is_main():  # several processes: only process 0 writes
        fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def training_curves(histories: Mapping[str, Sequence[dict]], path) -> Path:
    """Test -ELBO against epoch and against cumulative wall-clock time, one line per estimator."""
    fig, (ax_e, ax_t) = plt.subplots(1, 2, figsize=(10, 3.8))
    for name, hist in histories.items():
        epochs = [h["epoch"] for h in hist]
        test = [h["test_neg_elbo"] for h in hist]
        wall = torch.tensor([h["seconds"] for h in hist]).cumsum(0).tolist()
        ax_e.plot(epochs, test, marker="o", ms=3, label=name)
        ax_t.plot(wall, test, marker="o", ms=3, label=name)
    ax_e.set(xlabel="epoch", ylabel="test -ELBO (nats/example)", title="by epoch")
    ax_t.set(xlabel="training time (s)", ylabel="test -ELBO (nats/example)", title="by wall-clock")
    for ax in (ax_e, ax_t):
        ax.grid(alpha=0.3)
    ax_e.legend()
    return _save(fig, path)


def image_grid(rows: Mapping[str, torch.Tensor], path, title: str, image_shape: Sequence[int]) -> Path:
    """One row of images per entry (``(n, C*H*W)`` tensors of pixel probabilities in [0, 1], images of
    ``image_shape`` (C, H, W), or (H, W); one channel is shown grey, three as colour)."""
    channels, (height, width) = (image_shape[0] if len(image_shape) == 3 else 1), image_shape[-2:]
    n_rows = len(rows)
    n_cols = max(len(v) for v in rows.values())
    fig, axes = plt.subplots(n_rows, n_cols, figsize=(n_cols * 0.9, n_rows * 1.0 + 0.4), squeeze=False)
    for r, (label, images) in enumerate(rows.items()):
        for c in range(n_cols):
            ax = axes[r][c]
            ax.set_xticks([])
            ax.set_yticks([])
            if c < len(images):
                image = images[c].detach().cpu().reshape(channels, height, width).permute(1, 2, 0)
                ax.imshow(image.squeeze(-1) if channels == 1 else image, cmap="gray", vmin=0, vmax=1)
            else:
                ax.axis("off")
        axes[r][0].set_ylabel(label, rotation=0, ha="right", va="center", fontsize=9)
    if title:
        fig.suptitle(title, fontsize=10)
    return _save(fig, path)


def latent_scatter(latents: Mapping[str, torch.Tensor], labels: torch.Tensor, path) -> Path:
    """The encoder means of test digits in a 2-D latent space, coloured by digit, per estimator."""
    fig, axes = plt.subplots(
        1, len(latents), figsize=(3.6 * len(latents) + 1, 3.6), squeeze=False, layout="constrained"
    )
    for ax, (name, z) in zip(axes[0], latents.items()):
        z = z.detach().cpu()
        points = ax.scatter(z[:, 0], z[:, 1], c=labels.cpu(), cmap="tab10", s=5, vmin=-0.5, vmax=9.5)
        ax.set(title=name, xlabel="z1", ylabel="z2")
    fig.colorbar(points, ax=axes[0].tolist(), ticks=range(10), label="digit")
    if distributed.is_main():  # several processes: only process 0 writes
        fig.savefig(Path(path), dpi=110)
    plt.close(fig)
    return Path(path)


def estimator_variance(
    names: Sequence[str], value_sd: Sequence[float], grad_var: Mapping[str, Sequence[float]], path
) -> Path:
    """Left: standard deviation of one draw of -ELBO/example. Right: total gradient variance (sum of
    per-element variances) for encoder and decoder parameters, log scale."""
    fig, (ax_v, ax_g) = plt.subplots(1, 2, figsize=(10, 3.8))
    ax_v.bar(names, value_sd, color="C0")
    ax_v.set(ylabel="sd of one draw (nats/example)", title="-ELBO estimate spread")
    width = 0.8 / max(len(grad_var), 1)
    for i, (part, values) in enumerate(grad_var.items()):
        ax_g.bar([j + i * width for j in range(len(names))], values, width=width, label=part)
    ax_g.set_xticks([j + width * (len(grad_var) - 1) / 2 for j in range(len(names))], names)
    ax_g.set(yscale="log", ylabel="sum of gradient variances", title="gradient variance")
    ax_g.legend()
    for ax in (ax_v, ax_g):
        ax.tick_params(axis="x", rotation=30)
        ax.grid(alpha=0.3, axis="y")
    return _save(fig, path)


def bound_curves(curves: Mapping[str, Sequence[dict]], path) -> Path:
    """Validation (solid) and test (dashed) IWAE_k bound against epoch, one colour per row."""
    fig, ax = plt.subplots(figsize=(7, 4.2))
    for i, (name, curve) in enumerate(curves.items()):
        epochs = [p["epoch"] for p in curve]
        ax.plot(epochs, [p["test_bound"] for p in curve], ls="--", color=f"C{i}", label=f"{name} test")
        val = [p["val_bound"] for p in curve]
        if all(v is not None for v in val):
            ax.plot(epochs, val, ls="-", color=f"C{i}", label=f"{name} validation")
    ax.set(xlabel="epoch", ylabel="IWAE_k bound (nats/example)", title="validation (solid) and test (dashed) bound")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    return _save(fig, path)


def nll_vs_k(nll: Mapping[str, Mapping[str, float]], path) -> Path:
    """Test NLL estimate -IWAE_k against k (log axis), one line per row: it falls as k grows."""
    fig, ax = plt.subplots(figsize=(6, 4))
    for name, by_k in nll.items():
        ks = sorted(by_k, key=int)
        ax.plot([int(k) for k in ks], [by_k[k] for k in ks], marker="o", ms=3, label=name)
    ax.set(
        xscale="log",
        xlabel="k (importance samples per digit)",
        ylabel="test -IWAE_k (nats/example)",
        title="test NLL estimate against k",
    )
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return _save(fig, path)


def active_units_bars(units: Mapping[str, tuple[int, int]], path) -> Path:
    """Active latent dimensions (Burda et al. 2015) per row, out of z_dim."""
    fig, ax = plt.subplots(figsize=(6, 3.6))
    names = list(units)
    ax.bar(names, [units[n][0] for n in names], color="C0", label="active")
    ax.bar(
        names,
        [units[n][1] - units[n][0] for n in names],
        bottom=[units[n][0] for n in names],
        color="C7",
        alpha=0.4,
        label="inactive",
    )
    ax.set(ylabel="latent dimensions", title="active units: Cov_x(E_q[z_d|x]) > 0.01")
    ax.tick_params(axis="x", rotation=30)
    ax.legend(fontsize=8)
    return _save(fig, path)
