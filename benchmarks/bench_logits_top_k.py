"""How far the top-k KL that a teacher reference allows is from the exact KL(teacher ‖ analog).

Both models read the prompt set once through the live capture (both full
next-token distributions at every compared position); the exact
`StreamingLogitFidelity` and `StreamingTopKLogitFidelity` at each k read the
same batches. Teacher: SmolLM2-135M-Instruct; analog: --student (default: a
copy of the teacher without every fourth block).

    python benchmarks/bench_logits_top_k.py --student .analog/analogs/<id> [--prompts 320] [--k 16 64 256]
"""

import argparse

import torch

from pytest_analog.capture import capture, plan_alignment
from pytest_analog.config import load_config
from pytest_analog.controls import layer_pruned_copy
from pytest_analog.demo import smollm2_gguf
from pytest_analog.metrics import StreamingLogitFidelity, StreamingTopKLogitFidelity, teacher_top_k
from pytest_analog.models import LoadedModel, ModelPair, load_model
from pytest_analog.prompts import load_prompts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prompts", type=int, default=None, help="at most this many prompts (default: all)")
    parser.add_argument("--student", default=None, help="analog model directory (default: a pruned copy of the teacher)")
    parser.add_argument("--k", type=int, nargs="+", default=[16, 64, 256, 1024])
    args = parser.parse_args()

    teacher = load_model(str(smollm2_gguf()), device="cpu", dtype="float32")
    if args.student:
        analog = load_model(args.student, device="cpu", dtype="float32")
    else:
        keep = [i for i in range(30) if i % 4 != 3]
        analog = LoadedModel(layer_pruned_copy(teacher.model, keep), teacher.tokenizer,
                             {**teacher.info, "num_layers": len(keep)}, teacher.source)
    pair = ModelPair(teacher, analog)
    if not pair.same_tokenizer:
        raise SystemExit("logit fidelity needs one tokenizer: give an analog with the teacher's")
    config = load_config(**{"prompts.max_prompts": args.prompts})
    prompts = load_prompts(config.prompts.set, args.prompts)
    plan = plan_alignment(teacher.tokenizer, analog.tokenizer, prompts.texts, same_tokenizer=True,
                          max_length=config.prompts.max_length, skip_first=config.positions.skip_first)
    exact = StreamingLogitFidelity()
    top = {k: StreamingTopKLogitFidelity() for k in args.k}
    with torch.inference_mode():
        for batch in capture(pair, plan, batch_size=config.batch_size, with_logits=True):
            exact.update(batch.teacher_logits, batch.analog_logits, batch.targets)
            for k, metric in top.items():
                metric.update(teacher_top_k(batch.teacher_logits, k, batch.targets), batch.analog_logits, batch.targets)
    full = exact.compute()
    print(f"{len(plan.prompts)} prompts, {full['n_tokens']} positions, vocabulary {len(teacher.tokenizer)}")
    print(f"exact: KL {full['kl']:.4f} nats, top-1 agreement {full['top1_agreement']:.4f}, "
          f"perplexity ratio {full['perplexity_ratio']:.4f}")
    for k, metric in top.items():
        r = metric.compute()
        print(f"top-{k}: KL {r['kl']:.4f} nats ({full['kl'] - r['kl']:.4f} below, "
              f"{100 * (full['kl'] - r['kl']) / full['kl']:.2f} %), top-1 agreement {r['top1_agreement']:.4f}, "
              f"perplexity ratio {r['perplexity_ratio']:.4f}")


if __name__ == "__main__":
    main()
