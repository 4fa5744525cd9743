"""Coverage of the gate's 95 % intervals when tokens cluster by prompt, and the small-P bias of debiased CKA.

Run: python benchmarks/bench_coverage.py [--datasets N] [--prompts 32 80 320] [--shares 0.2 0.5]

Data: P prompts of T = 20 tokens. x = z_x A + noise, y = z_y B + noise with an
8-wide latent z (correlation rho between z_x and z_y) and noise of variance
sigma² per coordinate; a share ``s`` of every part's variance is shared by the
tokens of one prompt. The control is y's model with its latent correlation
rho_c = rho / 3 (its chance level is above 0). Each data set is judged as the
gate judges it (`representation._intervals`):

- linear CKA over tokens: the estimate on every row, the replicates on a
  sample of at most 2,048 rows (`metrics.cka_interval`);
- RBF CKA (debiased) and mutual kNN (k = 10) over the prompts' mean rows;
- the corrected score (value − c) / (1 − c) of linear CKA against the control,
  from paired replicates (`metrics.corrected_interval`).

Population values: linear CKA from the model's covariances (analytic); RBF
CKA from one draw of 4,000 prompts (cached under the system temp directory);
mutual kNN, whose value depends on P, as its mean over 200 fresh draws of P
prompts (cached). A row's coverage is the share of data sets whose interval
holds the population value; "above" is the share whose interval lies wholly
above it (a false pass of a lower-bound gate: nominal 2.5 %). With N data sets
a row's standard error is about sqrt(0.05 · 0.95 / N) (0.03 at N = 60).
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from pytest_analog import metrics
from pytest_analog.criterion import chance_corrected

T, R, DX, DY, K = 20, 8, 48, 32, 10
A = np.random.default_rng(5).normal(size=(R, DX))
B = np.random.default_rng(99).normal(size=(R, DY))
SETTINGS = [(0.0, 3.0), (0.6, 3.0), (0.9, 1.5), (0.97, 0.7)]  # (rho, sigma): true CKA about 0, 0.2, 0.5, 0.8
CACHE = Path(tempfile.gettempdir()) / "pytest_analog_bench_coverage.json"


def linear_truth(rho: float, sigma: float) -> float:
    """Population linear CKA: ‖Σ_xy‖² / (‖Σ_xx‖ ‖Σ_yy‖) of the token-level (marginal) covariances."""
    sxx, syy, sxy = A.T @ A + sigma**2 * np.eye(DX), B.T @ B + sigma**2 * np.eye(DY), rho * A.T @ B
    return float((sxy**2).sum() / np.sqrt((sxx**2).sum() * (syy**2).sum()))


def draw(rng, n_prompts: int, share: float, rho: float, sigma: float, rho_c: float):
    """Token rows x, y, control [P·T, d], and the prompt of each row."""
    g = np.repeat(np.arange(n_prompts), T)

    def part(width):  # unit-variance noise, ``share`` of it shared by a prompt's tokens
        return np.sqrt(share) * rng.normal(size=(n_prompts, width))[g] + np.sqrt(1 - share) * rng.normal(size=(len(g), width))

    zx = part(R)
    zy, zc = rho * zx + np.sqrt(1 - rho**2) * part(R), rho_c * zx + np.sqrt(1 - rho_c**2) * part(R)
    return zx @ A + sigma * part(DX), zy @ B + sigma * part(DY), zc @ B + sigma * part(DY), g


def pooled(z, g):
    return np.stack([z[g == p].mean(0) for p in range(g.max() + 1)])


def truths(share: float, rho: float, sigma: float, n_prompts: int, cache: dict) -> dict:
    """Population RBF CKA and the mean mutual kNN at ``n_prompts`` (cached)."""
    key = f"{share}:{rho}:{sigma}:{n_prompts}"
    if key not in cache:
        rng = np.random.default_rng(12345)
        if f"rbf:{share}:{rho}:{sigma}" not in cache:
            x, y, _, g = draw(rng, 4000, share, rho, sigma, 0.0)
            cache[f"rbf:{share}:{rho}:{sigma}"] = metrics.rbf_cka(pooled(x, g), pooled(y, g), debiased=True)
        knn = []
        for _ in range(200):
            x, y, _, g = draw(rng, n_prompts, share, rho, sigma, 0.0)
            knn.append(metrics.mutual_knn(pooled(x, g), pooled(y, g), k=K))
        cache[key] = float(np.mean(knn))
        CACHE.write_text(json.dumps(cache))
    return {"rbf_cka": cache[f"rbf:{share}:{rho}:{sigma}"], "mutual_knn": cache[key]}


def one(rng, seed: int, n_prompts: int, share: float, rho: float, sigma: float) -> dict:
    """Each metric's (low, high) interval on one data set, as the gate computes it."""
    x, y, control, g = draw(rng, n_prompts, share, rho, sigma, rho / 3)
    out = {"cka": metrics.cka_interval(x, y, g, seed=seed)[1:3]}
    # the corrected score: value and control replicates in the same draws, on the gate's row sample
    keep = np.sort(rng.choice(len(g), size=min(2048, len(g)), replace=False))
    counts = metrics.interval_counts(n_prompts, 200, seed)
    value, chance = (metrics.linear_cka_replicates(x[keep], z[keep], g[keep], counts) for z in (y, control))
    estimates = [metrics.linear_cka(x, z, debiased=True) for z in (y, control)]
    share_all = metrics.same_group_share(np.bincount(g))
    out["corrected"] = metrics.corrected_interval(value, chance, *estimates, counts, np.bincount(g[keep], minlength=n_prompts), share=share_all)
    px, py = pooled(x, g), pooled(y, g)
    rbf = metrics.rbf_cka_replicates(px, py, counts, debiased=True)
    out["rbf_cka"] = metrics.bias_corrected_interval(rbf, metrics.rbf_cka(px, py, debiased=True), counts)
    knn = metrics.mutual_knn_replicates(px, py, metrics.resample_counts(n_prompts, 200, seed), k=K)
    out["mutual_knn"] = metrics.percentile_interval(knn)
    return out


def coverage(args) -> None:
    cache = json.loads(CACHE.read_text()) if CACHE.exists() else {}
    print(f"{'P':>4} {'share':>5} {'rho':>5} | " + " | ".join(f"{m:>10} true  cover above" for m in ("cka", "corrected", "rbf_cka", "mutual_knn")))
    for n_prompts in args.prompts:
        for share in args.shares:
            for rho, sigma in SETTINGS:
                started = time.perf_counter()
                truth = {"cka": linear_truth(rho, sigma)}
                truth["corrected"] = float(chance_corrected(truth["cka"], linear_truth(rho / 3, sigma)))
                truth.update(truths(share, rho, sigma, n_prompts, cache))
                hits = {m: [0, 0] for m in truth}
                rng = np.random.default_rng(hash((n_prompts, share, rho)) % 2**32)
                for seed in range(args.datasets):
                    for m, (low, high) in one(rng, seed, n_prompts, share, rho, sigma).items():
                        hits[m][0] += low <= truth[m] <= high
                        hits[m][1] += low > truth[m]
                cells = " | ".join(f"{' ':>10} {truth[m]:5.3f} {hits[m][0] / args.datasets:5.3f} {hits[m][1] / args.datasets:5.3f}" for m in truth)
                print(f"{n_prompts:4d} {share:5.2f} {rho:5.2f} | {cells}   ({time.perf_counter() - started:.0f} s)", flush=True)


def bias(args) -> None:
    """Mean debiased linear CKA of unrelated x and y (population 0) over P prompts, and P times it."""
    print("\nsmall-P bias of debiased linear CKA, x and y unrelated (population value 0)")
    print(f"{'share':>5} {'P':>4} {'mean':>8} {'P*mean':>7}")
    for share in (0.2, 0.38, 0.5):
        for n_prompts in (40, 200):
            rng = np.random.default_rng(7)
            values = [metrics.linear_cka(*draw(rng, n_prompts, share, 0.0, 3.0, 0.0)[:2], debiased=True)
                      for _ in range(args.bias_datasets)]
            print(f"{share:5.2f} {n_prompts:4d} {np.mean(values):8.4f} {n_prompts * np.mean(values):7.2f}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--datasets", type=int, default=200, help="simulated data sets per row (default 200)")
    parser.add_argument("--prompts", type=int, nargs="+", default=[32, 80, 320])
    parser.add_argument("--shares", type=float, nargs="+", default=[0.2, 0.5], help="prompt-level variance shares")
    parser.add_argument("--bias-datasets", type=int, default=200)
    args = parser.parse_args()
    torch.set_num_threads(1)
    bias(args)
    coverage(args)


if __name__ == "__main__":
    main()
