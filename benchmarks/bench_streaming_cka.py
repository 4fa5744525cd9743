"""Benchmark StreamingLinearCKA: time and memory at a million rows, and agreement with the Gram form.

Run: python benchmarks/bench_streaming_cka.py [--rows N] [--dim D] [--gram-rows N]

Data are synthetic activations generated batch by batch (so the data never
sit in memory): x has per-coordinate means of order 1e3, as LLM hidden states
do, and y is a noisy, permuted, rescaled copy of x with its own offsets.
"""

from __future__ import annotations

import argparse
import os
import resource
import threading
import time
from contextlib import contextmanager

import psutil
import torch

from pytest_analog.metrics import StreamingLinearCKA, cka_matrix

MIB = 2**20


class PeakRSS:
    """Peak resident memory above the starting RSS, sampled by a background thread.

    tracemalloc does not see torch's allocator, so the process RSS is sampled
    every `interval` seconds instead; short spikes between samples can be missed.
    """

    def __init__(self, interval: float = 0.002) -> None:
        self.interval = interval
        self.process = psutil.Process()
        self.peak = 0

    def _sample(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self.process.memory_info().rss)
            time.sleep(self.interval)

    @contextmanager
    def measure(self):
        self.start = self.peak = self.process.memory_info().rss
        self._stop = threading.Event()
        thread = threading.Thread(target=self._sample, daemon=True)
        thread.start()
        try:
            yield self
        finally:
            self._stop.set()
            thread.join()
            self.peak = max(self.peak, self.process.memory_info().rss)

    @property
    def delta_mib(self) -> float:
        return (self.peak - self.start) / MIB


def batches(rows: int, dim: int, batch: int, seed: int):
    """Yield (x, y) float32 batches [b, dim] of a fixed synthetic distribution."""
    gen = torch.Generator().manual_seed(seed)
    offset_x = 1e3 * torch.randn(dim, generator=gen)
    offset_y = 1e3 * torch.randn(dim, generator=gen)
    scale = torch.rand(dim, generator=gen) * 3 + 0.1
    perm = torch.randperm(dim, generator=gen)
    for start in range(0, rows, batch):
        b = min(batch, rows - start)
        z = torch.randn(b, dim, generator=gen) * scale
        yield z + offset_x, 0.5 * z[:, perm] + torch.randn(b, dim, generator=gen) + offset_y


def stream(rows: int, dim: int, batch: int, seed: int) -> dict:
    """Feed StreamingLinearCKA; return values, update time (data generation excluded) and memory."""
    metric = StreamingLinearCKA()
    update_s = 0.0
    meter = PeakRSS()
    with meter.measure():
        for x, y in batches(rows, dim, batch, seed):
            started = time.perf_counter()
            metric.update(x, y)
            update_s += time.perf_counter() - started
        started = time.perf_counter()
        values = {debiased: metric.compute(debiased=debiased) for debiased in (False, True)}
        compute_s = time.perf_counter() - started
    state_mib = sum(t.numel() * t.element_size() for t in metric._stats.values()) / MIB
    return {"values": values, "update_s": update_s, "compute_s": compute_s, "peak_mib": meter.delta_mib,
            "state_mib": state_mib, "n": metric.n}  # fmt: skip


def gram(rows: int, dim: int, batch: int, seed: int) -> dict:
    """Gram-matrix CKA (cka_matrix on one layer pair) on the same rows; time and memory."""
    x, y = map(torch.cat, zip(*batches(rows, dim, batch, seed)))
    meter = PeakRSS()
    values, seconds = {}, {}
    with meter.measure():
        for debiased in (False, True):
            started = time.perf_counter()
            values[debiased] = float(cka_matrix([x], [y], debiased=debiased)[0, 0])
            seconds[debiased] = time.perf_counter() - started
    return {"values": values, "seconds": seconds, "peak_mib": meter.delta_mib}


def maxrss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / MIB  # Linux reports KiB


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000, metavar="N", help="rows streamed (default: 1000000)")
    parser.add_argument("--dim", type=int, default=576, metavar="D", help="width of x and y (default: 576)")
    parser.add_argument("--batch", type=int, default=4096, metavar="B", help="rows per update (default: 4096)")
    parser.add_argument("--gram-rows", type=int, default=10_000, metavar="N",
                        help="rows for the Gram-matrix comparison (default: 10000)")  # fmt: skip
    parser.add_argument("--seed", type=int, default=0, help="data seed (default: 0)")
    args = parser.parse_args()

    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; float32 input, float64 statistics")
    print("memory: peak RSS above the phase's starting RSS, sampled every 2 ms by a psutil thread")
    print("        (tracemalloc cannot see torch allocations); process ru_maxrss shown after each phase")
    print("load average at start: {:.2f} {:.2f} {:.2f} (other processes slow the timings)\n".format(*os.getloadavg()))

    s = stream(args.rows, args.dim, args.batch, args.seed)
    rate = s["n"] / s["update_s"]
    print(f"(a) StreamingLinearCKA, n={s['n']:,} rows, d={args.dim}, batches of {args.batch}")
    print(f"    update total {s['update_s']:.1f} s ({rate:,.0f} rows/s); "
          f"compute (both modes) {s['compute_s'] * 1e3:.1f} ms")  # fmt: skip
    print(f"    CKA biased {s['values'][False]:.12f}   debiased {s['values'][True]:.12f}")
    print(f"    state {s['state_mib']:.1f} MiB; peak RSS +{s['peak_mib']:.0f} MiB "
          f"(ru_maxrss {maxrss_mib():.0f} MiB)\n")  # fmt: skip

    small = stream(args.gram_rows, args.dim, args.batch, args.seed + 1)
    g = gram(args.gram_rows, args.dim, args.batch, args.seed + 1)
    print(f"(b) n={args.gram_rows:,} rows, d={args.dim}: streaming vs Gram matrices (cka_matrix)")
    print(f"    streaming: update {small['update_s']:.2f} s, compute {small['compute_s'] * 1e3:.1f} ms, "
          f"peak RSS +{small['peak_mib']:.0f} MiB")  # fmt: skip
    print(f"    Gram:      biased {g['seconds'][False]:.2f} s, debiased {g['seconds'][True]:.2f} s, "
          f"peak RSS +{g['peak_mib']:.0f} MiB (ru_maxrss {maxrss_mib():.0f} MiB)")  # fmt: skip
    for debiased, name in ((False, "biased"), (True, "debiased")):
        a, b = small["values"][debiased], g["values"][debiased]
        print(f"    {name:8s}  streaming {a:.15f}  Gram {b:.15f}  |diff| {abs(a - b):.1e}")
    print("load average at end: {:.2f} {:.2f} {:.2f}".format(*os.getloadavg()))


if __name__ == "__main__":
    main()
