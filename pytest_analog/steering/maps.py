"""Cross-model maps from analog activations [n, d_s] to teacher activations [n, d_t].

- ridge: closed-form least squares with bias (Lee et al. 2025), from streamed
  float64 sums (`metrics.PairedMoments`: update / merge / subtract / compute);
- procrustes: an orthogonal map (orthonormal rows or columns; Kiers' majorization
  when the analog is wider) with one isotropic scale (the two models' norms
  differ), from the same sums;
- autoencoder: Linear(d_s -> h) - ReLU - Linear(h -> d_t), h = sqrt(d_s * d_t),
  trained briefly with a fixed seed (Oozeer et al. 2025).

Every map is a callable on [n, d_s] tensors; `evaluate` gives held-out fraction
of variance unexplained and mean cosine.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from pytest_analog.errors import AnalogError
from pytest_analog.metrics.moments import PairedMoments

MAP_KINDS = ("ridge", "procrustes", "autoencoder")


def _centred(moments: PairedMoments):
    """(mean x, mean y, centred XᵀX, centred XᵀY) of the fitting rows."""
    if moments.n < 2:
        raise AnalogError(f"a map needs at least 2 paired rows, got {moments.n}")
    mean_x, mean_y, centred = moments.compute()
    return mean_x, mean_y, centred["xx"], centred["xy"]


def _ridge_map(moments: PairedMoments, ridge: float = 1e-3) -> AffineMap:
    """The least-squares affine map with ridge ``ridge`` × mean eigenvalue of the centred XᵀX."""
    mx, my, cxx, cxy = _centred(moments)
    lam = ridge * torch.trace(cxx) / len(cxx)
    weight = torch.linalg.solve(cxx + lam * torch.eye(len(cxx), dtype=cxx.dtype, device=cxx.device), cxy)
    return AffineMap("ridge", weight, my - mx @ weight)


def _polar(m: torch.Tensor) -> torch.Tensor:
    """The orthonormal polar factor UVᵀ of ``m`` (thin SVD)."""
    u, _, vh = torch.linalg.svd(m, full_matrices=False)
    return u @ vh


def _procrustes_map(moments: PairedMoments, *, tol: float = 1e-10, max_iter: int = 20_000) -> AffineMap:
    """The least-squares map y = c x R + b, R with orthonormal rows (d_s <= d_t) or columns (d_s > d_t).

    With orthonormal rows ‖XR‖² = tr(XᵀX) for every R, so R = polar(XᵀY) is exact. With orthonormal columns
    (the analog wider: unbalanced Procrustes) it is exact only for isotropic XᵀX; there each step is Kiers'
    (1990) majorization R ← polar(XᵀY / c + (λI − XᵀX) R), λ = λ_max(XᵀX), taken from a Nesterov
    extrapolation of R (restarted when the step turns against it: O'Donoghue and Candès 2015; about 2,000
    steps where plain majorization needs over 100,000), with the least-squares scale c = tr(RᵀXᵀY) / ‖XR‖²
    after each, until no entry of R moves by more than ``tol``.
    """
    mx, my, cxx, cxy = _centred(moments)
    rotation = _polar(cxy)

    def least_squares_scale(r):
        return torch.trace(r.T @ cxy) / torch.trace(r.T @ cxx @ r)

    scale = least_squares_scale(rotation)
    if cxy.shape[0] > cxy.shape[1]:
        lam = torch.linalg.eigvalsh(cxx)[-1]
        previous, momentum = rotation, 0
        for _ in range(max_iter):
            ahead = rotation + momentum / (momentum + 3) * (rotation - previous)
            step = _polar(ahead + (cxy / scale - cxx @ ahead) / lam)
            momentum = 0 if torch.sum((ahead - step) * (step - rotation)) > 0 else momentum + 1
            moved = (step - rotation).abs().max()
            previous, rotation = rotation, step
            scale = least_squares_scale(rotation)
            if moved < tol:
                break
    weight = scale * rotation
    return AffineMap("procrustes", weight, my - mx @ weight)


@dataclass
class AffineMap:
    """y = x W + b."""

    kind: str
    weight: torch.Tensor  # [d_s, d_t] float64
    bias: torch.Tensor  # [d_t]

    def __call__(self, x):
        x = torch.as_tensor(x)
        return (x.double() @ self.weight.to(x.device) + self.bias.to(x.device)).to(x.dtype if x.is_floating_point() else torch.float64)


class AutoencoderMap(torch.nn.Module):
    """Linear(d_s -> h) - ReLU - Linear(h -> d_t), on inputs and targets scaled to unit mean norm."""

    kind = "autoencoder"

    def __init__(self, d_s: int, d_t: int, hidden: int | None = None):
        super().__init__()
        hidden = hidden or max(1, round(math.sqrt(d_s * d_t)))
        self.net = torch.nn.Sequential(torch.nn.Linear(d_s, hidden), torch.nn.ReLU(), torch.nn.Linear(hidden, d_t))
        self.register_buffer("x_mean", torch.zeros(d_s))
        self.register_buffer("x_scale", torch.ones(()))
        self.register_buffer("y_mean", torch.zeros(d_t))
        self.register_buffer("y_scale", torch.ones(()))

    def forward(self, x):
        x = torch.as_tensor(x)
        dtype = x.dtype if x.is_floating_point() else torch.float32
        with torch.no_grad():
            z = (x.float().to(self.x_mean.device) - self.x_mean) / self.x_scale
            return (self.net(z) * self.y_scale + self.y_mean).to(device=x.device, dtype=dtype)


def fit_autoencoder(x, y, *, steps: int = 300, batch_size: int = 256, lr: float = 1e-3, seed: int = 0) -> AutoencoderMap:
    """Train the autoencoder map on paired rows with MSE, Adam, a fixed seed (CPU, float32)."""
    x, y = torch.as_tensor(x).float().cpu(), torch.as_tensor(y).float().cpu()
    if len(x) != len(y) or len(x) < 2:
        raise AnalogError(f"the autoencoder map needs at least 2 paired rows, got {len(x)} and {len(y)}")
    generator = torch.Generator().manual_seed(seed)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = AutoencoderMap(x.shape[1], y.shape[1])
    model.x_mean, model.y_mean = x.mean(0), y.mean(0)
    model.x_scale = (x - model.x_mean).norm(dim=1).mean().clamp_min(1e-12)
    model.y_scale = (y - model.y_mean).norm(dim=1).mean().clamp_min(1e-12)
    xs, ys = (x - model.x_mean) / model.x_scale, (y - model.y_mean) / model.y_scale
    optimizer = torch.optim.Adam(model.net.parameters(), lr=lr)
    with torch.enable_grad():
        for _ in range(steps):
            rows = torch.randint(len(xs), (min(batch_size, len(xs)),), generator=generator)
            loss = ((model.net(xs[rows]) - ys[rows]) ** 2).sum(1).mean()
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    return model.eval()


def evaluate(mapping, x, y) -> dict[str, float]:
    """Fraction of variance unexplained and mean row cosine of ``mapping(x)`` against ``y`` (held-out rows)."""
    y = torch.as_tensor(y).double()
    predicted = torch.as_tensor(mapping(x)).double().to(y.device)
    residual = ((y - predicted) ** 2).sum()
    total = ((y - y.mean(0)) ** 2).sum()
    cosine = torch.nn.functional.cosine_similarity(predicted, y, dim=1).mean()
    return {"fvu": float(residual / total), "cosine": float(cosine)}


def fit_map(kind: str, moments: PairedMoments, x=None, y=None, *, ridge: float = 1e-3, steps: int = 300, seed: int = 0):
    """Fit a map of ``kind`` ("ridge", "procrustes" from ``moments``; "autoencoder" from rows ``x``, ``y``)."""
    if kind == "ridge":
        return _ridge_map(moments, ridge)
    if kind == "procrustes":
        return _procrustes_map(moments)
    if kind == "autoencoder":
        return fit_autoencoder(x, y, steps=steps, seed=seed)
    raise AnalogError(f"map kind must be one of {', '.join(MAP_KINDS)}, got {kind!r}")
