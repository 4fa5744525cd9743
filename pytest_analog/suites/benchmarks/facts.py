"""What each metric of the benchmarks suite is: its description, direction, bounds, failure and remedy."""

from pytest_analog.facts import Metric

METRICS = {
    "benchmark_retained": Metric(
        "fraction of the teacher's lm-eval score the analog keeps, chance-corrected for multiple choice",
        "On an lm-evaluation-harness task, (analog - chance) / (teacher - chance) for multiple choice, "
        "analog / teacher for other higher-is-better scores, teacher / analog for perplexity and bits per "
        "byte. 1 means the analog keeps all of the teacher's skill, 0 that it guesses. Higher is better.",
        "the analog keeps too little of the teacher's skill on this task",
        "distil on more tokens of text like the task's, or give the analog a larger --fraction",
        direction="min",
        judged_under="benchmarks",
    ),
    "benchmark_delta": Metric(
        "analog - teacher lm-eval score, paired over the task's items",
        "The analog's lm-evaluation-harness score minus the teacher's on the same items, with a paired "
        "standard error. 0 means equally good; the sign follows the task's metric.",
        "the analog scores too far below the teacher on this task",
        "distil on more tokens of text like the task's, or give the analog a larger --fraction",
        direction=None,
        judged_under="benchmarks",
    ),
}
