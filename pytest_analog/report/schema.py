"""The fidelity report document, written down once.

The plugin builds this dict, ``fidelity.json`` stores it, and the markdown,
HTML and terminal views render it. Readers of a saved report (a CI step, an
auditor, a later version of this package) depend on these keys, so any change
to them bumps `SCHEMA_VERSION`. The TypedDicts are documentation and a target
for type checkers; nothing validates a report against them at run time, and
the renderers tolerate missing optional keys and unknown extra ones.
"""

from typing import Any, Literal, TypedDict

SCHEMA_VERSION = 3

Verdict = Literal["pass", "fail", "partial", "no gated criteria"]


class ToolInfo(TypedDict):
    # Always "pytest-analog".
    name: str
    # Version of the package that wrote the report.
    version: str


class TokenizerInfo(TypedDict, total=False):
    # Tokenizer name or path as loaded.
    name: str
    # Number of token ids, added tokens included.
    vocab_size: int
    # Hex SHA-256 of the tokenizer files, so a silent tokenizer swap is visible.
    sha256: str


class ModelInfo(TypedDict, total=False):
    # Hub id or local path the model was loaded from.
    id: str
    # How it was loaded: "hub", "directory" or "gguf".
    source: str
    # First entry of config.architectures, e.g. "LlamaForCausalLM".
    architecture: str
    # config.model_type, e.g. "llama".
    model_type: str
    # Total parameter count (tied weights counted once).
    parameters: int
    # Number of transformer blocks.
    num_layers: int
    # Width of the residual stream.
    hidden_size: int
    # Hex SHA-256 over the weight files, in sorted file-name order.
    sha256: str
    # The tokenizer the model was run with.
    tokenizer: TokenizerInfo
    # Compute dtype during capture, e.g. "float32".
    dtype: str
    # Device the model ran on, e.g. "cpu" or "cuda:0".
    device: str


class _ModelsRequired(TypedDict):
    # The reference model.
    teacher: ModelInfo
    # The analog under test.
    analog: ModelInfo


class ModelsSection(_ModelsRequired, total=False):
    # analog parameters / teacher parameters.
    parameter_fraction: float
    # True when both tokenizers produce identical token ids (token alignment possible).
    same_tokenizer: bool


class EnvironmentInfo(TypedDict, total=False):
    # platform.python_version().
    python: str
    # platform.platform().
    platform: str
    # torch.__version__.
    torch: str
    # transformers.__version__.
    transformers: str
    # numpy.__version__.
    numpy: str
    # Human name of the accelerator, or "cpu".
    device_name: str


class CaptureInfo(TypedDict, total=False):
    # Name of the prompt set ("default" or a user file).
    prompt_set: str
    # Hex SHA-256 of the prompt set's contents.
    prompt_set_sha256: str
    # Prompts actually used.
    n_prompts: int
    # Prompts dropped, e.g. word counts that differ between tokenizers.
    n_prompts_dropped: int
    # "token" (same tokenizer: compare every token) or "word" (last sub-token of each word).
    alignment: Literal["token", "word"]
    # Aligned positions (rows of the activation matrices) the metrics saw.
    n_rows: int
    # Plain-language statement of which positions were compared and which were excluded.
    positions: str
    # Massive-activation rows left out of the token-level metrics (see MassiveSection); 0 with `keep`.
    n_rows_left_out: int
    # Wall-clock seconds spent capturing activations.
    seconds: float
    # True when the activations came from the capture cache.
    cached: bool


class Calibration(TypedDict, total=False):
    value: float  # the similarity on the null's rows
    threshold: float | None  # the null's 1 - alpha quantile (observed value included, as calibrated-similarity)
    p_value: float | None  # (1 + #{null >= value}) / (permutations + 1)
    calibrated: float | None  # 0 at the threshold, 1 for a perfect match
    permutations: int
    layer: int  # best matches only: the analog layer of the maximum


class LayersSection(TypedDict, total=False):
    # Statement of the layer-index convention, once.
    convention: str
    # Teacher layer indices, in matrix row order.
    teacher: list[int]
    # Student layer indices, in matrix column order.
    analog: list[int]
    # len(teacher) x len(analog) debiased linear CKA on a token sample (massive rows left out), except the
    # gated cells (teacher layer, mapped analog layer), which hold the gated values; null where not computable.
    cka_matrix: list[list[float | None]]
    # Tokens in the sample the matrix was computed on.
    matrix_rows: int
    # Student layer with the highest CKA, per teacher layer.
    best_match: list[int]
    # Per teacher layer, the permutation null's record of its best match over every analog layer (the
    # heatmap's marker) and over analog layers >= 1 (steering's best_match layer), each against the null of the
    # maximum over those layers; absent with chance.permutations: 0.
    best_match_calibration: dict[str, Calibration]
    best_block_calibration: dict[str, Calibration]
    # Student layer the gated per-layer criteria compare against, per teacher layer; null where none.
    mapped: list[int | None]


class BenchmarkTask(TypedDict):
    # lm-eval metric compared (the task's first configured one), e.g. "acc", "bits_per_byte".
    metric: str
    # lm-eval filter the metric was reported under, e.g. "none".
    filter: str
    # The metric's direction, from lm-eval.
    higher_is_better: bool
    # Items both models answered.
    n: int
    # Accuracy of a uniform guess (mean of 1 / choices); null when not multiple choice.
    chance: float | None
    # lm-eval's aggregate score of each model, and its 95 % interval (null when not computable).
    teacher: float
    analog: float
    teacher_ci95: list[float] | None
    analog_ci95: list[float] | None
    # analog - teacher, its paired standard error over the same items and 95 % interval.
    delta: float
    delta_se: float | None
    delta_ci95: list[float] | None
    # (analog - chance) / (teacher - chance) for multiple choice, analog / teacher for other
    # higher-is-better metrics, teacher / analog for lower-is-better; null when the teacher
    # is not above chance beyond its interval.
    retained: float | None
    # Its 95 % delta-method interval: a ratio of both models' scores, each varying over the items.
    retained_ci95: list[float] | None
    # Why a value above is null, when one is.
    note: str | None


class BenchmarksSection(TypedDict):
    # lm-evaluation-harness version that scored both models.
    lm_eval_version: str
    # True when the scores came from the cache.
    cached: bool
    # Per task name.
    tasks: dict[str, BenchmarkTask]
    # lm-eval's result dict per model ("teacher", "analog"), without per-sample rows.
    results: dict[str, dict]


class _CriterionRow(TypedDict):
    # Exactly the keys `pytest_analog.criterion.Criterion.to_dict` writes (`criterion.ROW_FIELDS`, checked by
    # tests/test_report.py); what follows from the measurement and the gate is recomputed by every reader.
    # Unique id, "<suite>::<test name>[<params>]".
    id: str
    # Suite (or user test module) the criterion belongs to.
    suite: str
    # Metric name: cka, rbf_cka, mutual_knn, kl, ... or any user-defined name.
    metric: str
    # One line saying what was measured (its suite's facts about the metric); "" when none describe it.
    description: str
    # Measured value; null when it could not be computed (NaN is written as null).
    value: float | None
    # Its bootstrap (or paired) interval [low, high]; a non-finite end is null.
    interval: list[float | None] | None
    # The same metric for a control without learned structure, and its interval.
    chance: float | None
    chance_interval: list[float | None] | None
    # (value - chance) / (1 - chance), 0 at chance and 1 for a perfect match; null without both.
    corrected: float | None
    # Its interval, from paired replicates.
    corrected_interval: list[float | None] | None
    # Why there is no value, or what a check found.
    reason: str | None
    # "min": the judged score must be >= threshold; "max": <= threshold; null when ungated.
    direction: Literal["min", "max"] | None
    # Pass/fail threshold; null for informational criteria.
    threshold: float | None
    # The score the threshold applies to: "raw" (value) or "corrected".
    score: Literal["raw", "corrected"]
    # Decision rule: "point" judges the estimate, "lower_bound" the interval's end (lower for min, upper for max).
    rule: Literal["point", "lower_bound"]
    # True when this criterion decides the verdict.
    gated: bool
    # Outcome of a gated criterion (a gated one with no score fails); null for informational ones.
    passed: bool | None
    # Whether the corrected interval lies above 0; null without one.
    above_chance: bool | None
    # True when the interval of the judged score holds the threshold.
    too_close_to_call: bool


class CriterionRow(_CriterionRow, total=False):
    # The details a suite records beside the row (any other key is a detail too: task, behaviour, bound, ...).
    # Teacher layer, for per-layer criteria.
    teacher_layer: int
    # Analog layer compared against, for per-layer criteria.
    analog_layer: int
    # Why the figure means little: fewer prompts than gates.cka.min_prompts (token-level CKA).
    few_prompts: str
    # The permutation null of a per-layer similarity (chance.permutations prompt permutations): the value on the
    # null's rows, threshold (the null's 1 - chance.alpha quantile), add-one p_value, calibrated score
    # (value - threshold) / (1 - threshold) clipped to [0, 1], and permutations.
    calibration: Calibration
    # The same for this teacher layer's best match (layer: the best analog layer), against the null of the
    # maximum over analog layers: calibrated for the search.
    best_match_calibration: Calibration


class Summary(TypedDict):
    # What `pytest_analog.criterion.summary` computes from the criteria.
    # Number of gated criteria.
    gated: int
    # Gated criteria that passed.
    passed: int
    # Gated criteria that failed.
    failed: int
    # Ungated criteria, reported for information.
    informational: int
    # Criteria that could not be measured in this run, neither passed nor failed: [{"id", "reason"}]
    # (the steering transfer ratio against a teacher reference: it needs the teacher).
    not_measured: list[dict]


class ReferenceSection(TypedDict):
    # Hex SHA-256 of the teacher reference's manifest (see pytest_analog.reference.store): what the
    # analog was scored against. A live run names the reference made of the parts it built.
    id: str
    # "file" (--analog-reference) or "memory" (built from the teacher in this run, parts cached).
    source: str
    # The reference folder given, or None.
    path: str | None
    # The runs whose teacher parts were read (representation, steering, benchmarks).
    parts: list[str]
    # The teacher's record (ModelInfo plus "files": file name -> SHA-256).
    teacher: dict


class _ReportRequired(TypedDict):
    # Version of this layout; see SCHEMA_VERSION.
    schema_version: int
    # UTC time of writing, ISO 8601 with a trailing "Z".
    created: str
    # What wrote the report.
    tool: ToolInfo
    # "pass", "fail", "partial" (nothing failed, but not every criterion ran: see ``partial``), or "no gated criteria".
    verdict: Verdict
    # Teacher and analog descriptions.
    models: ModelsSection
    # Library versions and hardware.
    environment: EnvironmentInfo
    # The effective configuration (YAML merged with command-line options), as a dict.
    config: dict
    # How activations were captured and which positions were compared.
    capture: CaptureInfo
    # Every criterion, gated or informational, in the order the tests ran.
    criteria: list[CriterionRow]
    # Counts over criteria.
    summary: Summary


class SteeringCase(TypedDict, total=False):
    # One behaviour at one teacher layer (see pytest_analog.steering.transfer).
    teacher_layer: int
    analog_layer: int  # the analog layer whose vector was carried across
    alphas: list[float]  # doses, in units of residual_norm
    residual_norm: float  # mean hidden-state norm at the teacher layer over steered positions (sink left out)
    baseline: float  # unsteered mean p(matching) / (p(matching) + p(other))
    probability: dict[str, list[float]]  # "native", "transferred", "random" -> mean p per alpha
    effect: dict[str, list[float]]  # the same minus baseline
    half_max_alpha: float | None  # where the native effect first reaches half its maximum
    transfer_ratio: float | None  # transferred / native effect at half_max_alpha
    transfer_gap: float | None  # 1 - transfer_ratio
    spearman: dict[str, float | None]  # rho(alpha, p) per vector
    random_control: float | None  # max |random effect| / max |native effect|
    cosine_native_transferred: float
    # the same cosine as a criterion: value, interval (over training pairs), chance (mean |cos| of mapped random
    # analog directions), chance_interval, corrected_interval
    direction_fidelity: dict[str, Any]
    notes: dict[str, str]  # criterion -> why it has no value
    unmeasured: dict[str, str]  # against a teacher reference only: criterion -> why it needs the teacher


class MassiveRow(TypedDict):
    row: int  # capture-order index of the aligned row
    prompt: int  # index of its prompt in the prompt set (after dropped prompts)
    position: int  # token position in the teacher's tokens
    token: str  # the teacher token there
    layers: list[int]  # gated teacher layers where it is massive
    norm_ratio: dict[str, float]  # teacher layer -> its norm / the layer's median row norm


class Influence(TypedDict, total=False):
    rows: int  # the top 0.1 % of rows by teacher norm at that layer (of those kept)
    value: float  # the gated CKA without them
    shift: float  # value - the gated CKA
    corrected: float  # the corrected score without them (with a control)
    corrected_shift: float


class MassiveSection(TypedDict, total=False):
    rule: str  # the detection rule in words
    multiple: float  # positions.massive_multiple
    excluded: bool  # whether the rows were left out of the token-level metrics
    note: str | None  # why they were kept although `exclude` was asked for
    by_layer: dict[str, int]  # gated teacher layer -> massive rows there
    median_norm: dict[str, float]  # gated teacher layer -> median teacher row norm
    rows: list[MassiveRow]
    influence: dict[str, Influence]  # gated teacher layer -> the influence figure


class SteeringSection(TypedDict, total=False):
    map: str  # map kind used for the transfer
    layer_rule: str  # which rule chose the analog layer of each steered teacher layer
    maps: dict[str, dict]  # teacher layer -> analog_layer, rows, and {"fvu", "cosine"} per map kind (held out)
    behaviours: dict[str, dict[str, SteeringCase]]  # behaviour -> teacher layer -> case
    forward_passes: dict[str, int]  # extra batches and sequences per model


class ReportDocument(_ReportRequired, total=False):
    # The teacher reference the analog was scored against; absent when no suite read the teacher.
    reference: ReferenceSection
    # Layer-by-layer similarity; absent when no representation suite ran.
    layers: LayersSection
    # lm-eval scores of both models and their paired deltas; absent when the benchmarks suite did not run.
    benchmarks: BenchmarksSection
    # One-line message of a session-level failure (a model that would not load, a bad prompt
    # set) that stopped measuring and forced the verdict to "fail"; absent when there was none.
    error: str
    # Why the report covers only part of the criteria (deselected tests, --lf, a run stopped
    # early); absent for a full run. Such a report never passes and is never submitted.
    partial: str
    # Steering transfer; present when the steering suite ran.
    steering: SteeringSection
    # Massive-activation rows and the influence figure; present when a representation suite ran.
    massive: MassiveSection
