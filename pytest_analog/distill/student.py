"""The analog's shape and starting weights, derived from the teacher.

`plan_shape` picks depth and width so that the student holds a given fraction
of the teacher's **total** parameters (embeddings included, tied matrices
counted once: what ``model.parameters()`` sums), shrinking depth and width in
about the same proportion. `pruned_student` initialises it from the teacher:
kept blocks (uniform or first-and-last), hidden channels, attention heads (in
whole KV groups) and MLP neurons chosen by activation importance on a
calibration sample (Minitron, Muralidharan et al. 2024). `random_student` is
the same shape with fresh weights.
"""

from __future__ import annotations

import copy
import math
from dataclasses import asdict, dataclass

import torch

from pytest_analog.errors import AnalogError
from pytest_analog.models import decoder_blocks

TOLERANCE = 0.05  # the planned parameter count is within 5 % of fraction x teacher parameters
_LLAMA_STYLE = ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj",
                "mlp.gate_proj", "mlp.up_proj", "mlp.down_proj", "input_layernorm", "post_attention_layernorm")


@dataclass(frozen=True)
class Shape:
    """A student architecture: its blocks, widths and parameter count."""

    layers: int
    hidden: int
    heads: int
    kv_heads: int
    head_dim: int
    intermediate: int
    parameters: int
    fraction: float  # of the teacher's parameters

    def to_dict(self) -> dict:
        return asdict(self)


def count_parameters(config) -> int:
    """Parameters of a model built from ``config`` (on the meta device: nothing is allocated)."""
    from transformers import AutoModelForCausalLM

    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config)
    return sum(p.numel() for p in model.parameters())


def plan_shape(teacher_config, fraction: float, *, same_head_dim: bool = False) -> Shape:
    """The student shape closest to ``fraction`` of the teacher's parameters.

    Among widths whose best depth lands within `TOLERANCE` of the target, the
    one whose width ratio is closest to its depth ratio wins. Heads keep the
    teacher's head size where the architecture allows (a ``head_dim`` config
    field), and query heads stay a multiple of the KV heads.

    Raises:
        AnalogError: the fraction is outside (0, 1] or no shape reaches it.
    """
    if not 0 < fraction <= 1:
        raise AnalogError(f"fraction must be in (0, 1], got {fraction}")
    t = teacher_config.get_text_config()
    total = count_parameters(t)
    target = fraction * total
    best = None
    for widths in _width_candidates(t, same_head_dim):
        base, per_layer = _base_and_block_parameters(_shaped(t, *widths, 1))
        layers = min(max(round((target - base) / per_layer), 1), t.num_hidden_layers)
        params = base + layers * per_layer
        if abs(params / target - 1) > TOLERANCE:
            continue
        balance = abs(math.log(layers / t.num_hidden_layers) - math.log(widths[0] / t.hidden_size))
        if best is None or balance < best[0]:
            best = (balance, Shape(layers, *widths, params, params / total))
    if best is None:
        raise AnalogError(
            f"no {t.model_type} shape holds {fraction:.2%} of the teacher's {total:,} parameters "
            f"within {TOLERANCE:.0%} (embeddings count); choose another fraction"
        )
    return best[1]


def student_config(teacher_config, shape: Shape, keep: list[int]):
    """The teacher's config with the student's shape (``keep``: the teacher blocks it mirrors)."""
    t = teacher_config.get_text_config()
    config = _shaped(t, shape.hidden, shape.heads, shape.kv_heads, shape.head_dim, shape.intermediate, shape.layers)
    if getattr(t, "layer_types", None):
        config.layer_types = [t.layer_types[i] for i in keep]
    return config


def kept_blocks(teacher_layers: int, layers: int, how: str) -> list[int]:
    """Teacher blocks the student's blocks start from: ``uniform`` strides from block 0,
    ``first_last`` spreads them evenly with the first and the last block always kept."""
    if how == "uniform":
        return [i * teacher_layers // layers for i in range(layers)]
    if how == "first_last":
        if layers == 1:
            return [0]
        return [round(i * (teacher_layers - 1) / (layers - 1)) for i in range(layers)]
    raise AnalogError(f"keep must be 'uniform' or 'first_last', got {how!r}")


def random_student(config, seed: int):
    """A student of ``config`` with fresh weights from ``seed``."""
    from transformers import AutoModelForCausalLM

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return AutoModelForCausalLM.from_config(config)


def pruned_student(teacher, config, keep: list[int], calibration: torch.Tensor, seed: int):
    """A student of ``config`` whose weights are slices of the teacher's.

    Hidden channels are ranked by the mean |activation| of every normalisation
    output, heads by the norm of their attention output (whole KV groups kept,
    then the strongest query heads inside each), MLP neurons by the mean
    |input| of the down projection; all on ``calibration`` token ids [n, seq].

    Raises:
        AnalogError: the teacher's blocks are not Llama-style (q/k/v/o, gate/up/down projections).
    """
    blocks = decoder_blocks(teacher)
    names = {n for n, _ in blocks[0].named_modules()}
    missing = [n for n in _LLAMA_STYLE if n not in names]
    if missing:
        raise AnalogError(
            f"init 'pruned' slices Llama-style blocks, but {teacher.config.model_type} blocks lack {', '.join(missing)}; "
            "use init 'random'"
        )
    t = teacher.config.get_text_config()
    head_dim = _head_dim(t)
    if _head_dim(config) != head_dim:
        raise AnalogError("init 'pruned' keeps whole heads, so the student's head size must equal the teacher's")
    imp = _importance(teacher, blocks, calibration, head_dim)
    channels = _top(imp["channels"], config.hidden_size)
    student = random_student(config, seed)  # parameters the teacher has no counterpart for keep this init
    teacher_state = teacher.state_dict()
    state = {}
    for name, value in student.state_dict().items():
        source, rows, cols = _slice_plan(name, keep, imp, channels, config, t, head_dim)
        w = teacher_state[source]
        w = w[rows] if rows is not None else w
        w = w[:, cols] if cols is not None else w
        if w.shape != value.shape:
            raise AnalogError(f"cannot slice teacher weight {source} {tuple(w.shape)} to {name} {tuple(value.shape)}")
        state[name] = w.to(value.dtype)
    student.load_state_dict(state)
    return student


def _base_and_block_parameters(config) -> tuple[int, int]:
    """(parameters outside the blocks, parameters of one block) of a one-block model of ``config``."""
    from transformers import AutoModelForCausalLM

    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config)
    block = sum(p.numel() for p in decoder_blocks(model)[0].parameters())
    return sum(p.numel() for p in model.parameters()) - block, block


def _head_dim(config) -> int:
    return getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads


def _width_candidates(t, same_head_dim: bool):
    """(hidden, heads, kv_heads, head_dim, intermediate) for every width the search tries."""
    heads_t = t.num_attention_heads
    kv_t = getattr(t, "num_key_value_heads", None) or heads_t
    head_dim_t = _head_dim(t)
    ffn = t.intermediate_size / t.hidden_size
    seen = set()
    if hasattr(t, "head_dim"):  # attention width is independent of the hidden size
        step = max(8, t.hidden_size // 512 * 8)  # at most 64 widths to try
        pairs = [(d, max(1, min(heads_t, round(heads_t * d / t.hidden_size))), head_dim_t) for d in range(step, t.hidden_size + 1, step)]
    else:
        sizes = [head_dim_t] if same_head_dim else [s for s in (head_dim_t, head_dim_t // 2, head_dim_t // 4) if s >= 8 and s % 2 == 0]
        pairs = [(h * s, h, s) for h in range(1, heads_t + 1) for s in sizes]
    for hidden, heads, head_dim in sorted(pairs):
        kv = min(kv_t, math.ceil(heads * kv_t / heads_t))  # a KV head serves at most as many query heads as in the teacher
        heads = heads // kv * kv
        if not hasattr(t, "head_dim"):
            hidden = heads * head_dim
        inter = t.intermediate_size if hidden == t.hidden_size else max(8, round(ffn * hidden / 8) * 8)
        key = (hidden, heads, kv, head_dim, inter)
        if key not in seen:
            seen.add(key)
            yield key


def _shaped(t, hidden, heads, kv, head_dim, inter, layers):
    config = copy.deepcopy(t)
    config.hidden_size, config.num_attention_heads, config.intermediate_size = hidden, heads, inter
    config.num_hidden_layers = layers
    if hasattr(config, "num_key_value_heads"):
        config.num_key_value_heads = kv
    if hasattr(config, "head_dim"):
        config.head_dim = head_dim
    if getattr(config, "layer_types", None):
        config.layer_types = config.layer_types[:1] * layers
    if hasattr(config, "quantization_config"):  # a GGUF teacher's; the student is a plain float model
        del config.quantization_config
    return config


def _top(scores: torch.Tensor, k: int) -> torch.Tensor:
    return torch.topk(scores, k).indices.sort().values


@torch.no_grad()
def _importance(teacher, blocks, calibration: torch.Tensor, head_dim: int) -> dict:
    """Activation importance of channels, heads and neurons over the calibration tokens."""
    device = teacher.get_input_embeddings().weight.device
    t = teacher.config.get_text_config()
    channels = torch.zeros(t.hidden_size, dtype=torch.float64)
    heads = torch.zeros(len(blocks), t.num_attention_heads, dtype=torch.float64)
    neurons = torch.zeros(len(blocks), t.intermediate_size, dtype=torch.float64)

    def add_channels(module, args, output):
        channels.add_(output.detach().abs().double().flatten(0, -2).mean(0).cpu())

    def add_heads(i):
        def hook(module, args):
            x = args[0].detach().double()
            heads[i].add_(x.unflatten(-1, (-1, head_dim)).norm(dim=-1).flatten(0, -2).mean(0).cpu())
        return hook

    def add_neurons(i):
        def hook(module, args):
            neurons[i].add_(args[0].detach().abs().double().flatten(0, -2).mean(0).cpu())
        return hook

    handles = []
    for i, block in enumerate(blocks):
        handles += [block.input_layernorm.register_forward_hook(add_channels),
                    block.post_attention_layernorm.register_forward_hook(add_channels),
                    block.self_attn.o_proj.register_forward_pre_hook(add_heads(i)),
                    block.mlp.down_proj.register_forward_pre_hook(add_neurons(i))]
    base = getattr(teacher, teacher.base_model_prefix)  # the blocks only: no vocabulary-sized logits
    try:
        for batch in calibration.split(4):
            base(input_ids=batch.to(device))
    finally:
        for handle in handles:
            handle.remove()
    return {"channels": channels, "heads": heads, "neurons": neurons}


def _slice_plan(name: str, keep: list[int], imp: dict, channels, config, t, head_dim: int):
    """(teacher weight name, rows, columns) that make student weight ``name``."""
    parts = name.split(".")
    if "layers" not in parts:
        # embeddings and the head take channels as columns; the final norm takes them as rows
        return name, (channels if parts[-2] == "norm" else None), (None if parts[-2] == "norm" else channels)
    at = parts.index("layers")
    j = int(parts[at + 1])
    i = keep[j]
    source = ".".join(parts[:at + 1] + [str(i)] + parts[at + 2:])
    module, kind = parts[-2], parts[-1]
    if module in ("input_layernorm", "post_attention_layernorm"):
        return source, channels, None
    group = t.num_attention_heads // (getattr(t, "num_key_value_heads", None) or t.num_attention_heads)
    kv_scores = imp["heads"][i].view(-1, group)
    kv_keep = _top(kv_scores.sum(1), config.num_key_value_heads)
    per_group = config.num_attention_heads // config.num_key_value_heads
    q_heads = torch.cat([g * group + _top(kv_scores[g], per_group) for g in kv_keep])
    dims = torch.arange(head_dim)
    q_rows = (q_heads[:, None] * head_dim + dims).flatten()
    kv_rows = (kv_keep[:, None] * head_dim + dims).flatten()
    neurons = _top(imp["neurons"][i], config.intermediate_size)
    rows, cols = {
        "q_proj": (q_rows, channels), "k_proj": (kv_rows, channels), "v_proj": (kv_rows, channels),
        "o_proj": (channels, q_rows), "gate_proj": (neurons, channels), "up_proj": (neurons, channels),
        "down_proj": (channels, neurons),
    }.get(module, (None, None))
    if kind == "bias":
        cols = None
    return source, rows, cols
