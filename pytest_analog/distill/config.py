"""Every setting of a distillation run: flat, typed, one comment each, saved with the analog."""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields

from pytest_analog.errors import AnalogError

_CHOICES = {
    "init": ("pruned", "random"),
    "keep": ("uniform", "first_last"),
    "loss": ("forward_kl", "reverse_kl", "jsd"),
    "align": ("none", "mse", "cosine"),
    "precision": ("auto", "float32", "bfloat16"),
}
# fields that change how a run is carried out, not what it produces
_NOT_IN_RESULT = ("teacher", "checkpoint_every", "trust_remote_code", "allow_pickle")


@dataclass
class DistillConfig:
    teacher: str  # hub id, model directory or .gguf file
    fraction: float = 0.05  # student parameters / teacher parameters, embeddings included
    init: str = "pruned"  # pruned: teacher blocks, channels, heads and neurons by activation importance; random
    keep: str = "uniform"  # teacher blocks the student starts from: uniform stride, or first_last spread
    corpus: str = "builtin"  # text/JSONL file, folder, dataset:NAME[@SPLIT], builtin (fixtures/corpus), or generate:N
    mix: str = "none"  # with generate:N, also train on this corpus (a file, folder, dataset:NAME or builtin)
    gen_temperature: float = 1.0  # with generate:N, the teacher's sampling temperature
    gen_top_p: float = 0.95  # with generate:N, the teacher's nucleus (top-p) sampling threshold
    gen_tokens: int = 128  # with generate:N, new tokens per continuation of a seed
    seq_len: int = 128  # tokens per training chunk
    heldout: float = 0.1  # share of chunks held out to measure the result
    loss: str = "forward_kl"  # forward_kl, reverse_kl, or jsd (generalised JSD with beta)
    beta: float = 0.5  # JSD mixture weight (0: forward KL, 1: reverse KL)
    temperature: float = 1.0  # softmax temperature of both models; losses are scaled by T^2
    top_k: int = 64  # teacher tokens cached per position; the rest of its mass is one bucket
    ce_weight: float = 0.0  # weight of cross-entropy on the corpus' next tokens
    align: str = "none"  # hidden-state alignment through learned projections: none, mse or cosine
    align_weight: float = 1.0  # weight of the alignment loss (mean over aligned layers)
    batch_size: int = 8  # chunks per micro-batch
    grad_accum: int = 1  # micro-batches per optimizer step
    lr: float = 2e-3  # peak AdamW learning rate (warmup, then cosine to 10 %)
    warmup: int = 20  # warmup steps
    weight_decay: float = 0.0  # AdamW weight decay
    max_steps: int = 400  # optimizer steps (the schedule's length)
    max_seconds: float | None = None  # stop after this much training time; the schedule then follows time
    eval_every: int = 25  # steps between held-out evaluations; the best evaluated weights are released
    patience: int = 0  # evaluations without a better held-out KL before stopping early (0: run to the end)
    checkpoint_every: int = 100  # steps between checkpoints (resume after an interruption)
    calibration: int = 16  # chunks the teacher reads to rank channels, heads and neurons
    seed: int = 0  # seeds initialisation and batch order
    device: str = "auto"  # auto (CUDA when present), cpu, cuda, cuda:N
    precision: str = "auto"  # auto: bf16 autocast on CUDA, float32 on CPU
    trust_remote_code: bool = False  # run custom model code from the teacher's repository
    allow_pickle: bool = False  # load a teacher with pickle weights

    def __post_init__(self):
        for name, choices in _CHOICES.items():
            if getattr(self, name) not in choices:
                raise AnalogError(f"{name} must be one of {', '.join(choices)}, got {getattr(self, name)!r}")
        checks = {
            "fraction": 0 < self.fraction <= 1, "heldout": 0 < self.heldout < 1, "beta": 0 <= self.beta <= 1,
            "temperature": self.temperature > 0, "top_k": self.top_k >= 1, "seq_len": self.seq_len >= 2,
            "batch_size": self.batch_size >= 1, "grad_accum": self.grad_accum >= 1, "lr": self.lr > 0,
            "max_steps": self.max_steps >= 1, "checkpoint_every": self.checkpoint_every >= 1,
            "max_seconds": self.max_seconds is None or self.max_seconds > 0, "warmup": self.warmup >= 0,
            "calibration": self.calibration >= 1, "ce_weight": self.ce_weight >= 0, "align_weight": self.align_weight >= 0,
            "gen_temperature": self.gen_temperature > 0, "gen_top_p": 0 < self.gen_top_p <= 1,
            "gen_tokens": self.gen_tokens >= 1, "eval_every": self.eval_every >= 1, "patience": self.patience >= 0,
        }
        bad = [name for name, ok in checks.items() if not ok]
        if bad:
            raise AnalogError(f"distillation setting {bad[0]}={getattr(self, bad[0])!r} is out of range")
        count = self.corpus.removeprefix("generate:")
        if self.corpus.startswith("generate:") and not (count.isdigit() and int(count) >= 1):
            raise AnalogError(f"corpus generate:N takes a number of tokens to generate, got {self.corpus!r}")
        if self.mix != "none" and self.generated_tokens is None:
            raise AnalogError(f"mix={self.mix!r} adds a corpus to generated text; use it with corpus generate:N")

    @property
    def generated_tokens(self) -> int | None:
        """N of ``corpus generate:N``, else None."""
        return int(self.corpus.removeprefix("generate:")) if self.corpus.startswith("generate:") else None

    def to_dict(self) -> dict:
        return asdict(self)

    def result_dict(self) -> dict:
        """The settings that decide the analog (the teacher enters as its file hash)."""
        return {k: v for k, v in asdict(self).items() if k not in _NOT_IN_RESULT}

    @classmethod
    def from_dict(cls, data: dict) -> DistillConfig:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise AnalogError(f"unknown distillation setting(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}")
        return cls(**data)
