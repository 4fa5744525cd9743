"""What README.md and docs/*.md show exists: options, command flags, config keys, imports, fixtures, links.

No model loads. The commands' ``--help`` (pytest's, each console script's and
subcommand's) run once each, in parallel, in a module fixture; ``pytest --fixtures``
runs once in-process; everything else reads files and the default config. Each
check returns its problems as lines, so a failure names the document and what it
got wrong, and the tests at the end plant one mistake per check to show that each
check can fail.

What the docs must keep to, for these checks to read them:

- Commands are in fenced blocks with no info string (or ``sh``/``bash``/``shell``/``console``)
  or in inline code spans; command output is fenced as ``text`` or ``markdown``.
- Every ``yaml`` block is (a piece of) a config file.
- The README's set-up commands are its first fenced block, and its test command is
  the first fenced block under the heading that starts with "Test".
"""

from __future__ import annotations

import ast
import importlib
import importlib.util
import os
import re
import shutil
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
CI_RUN = ROOT / ".ci" / "run"
# Written by someone else and may land later: a link to it is not broken while it is absent.
NOT_YET = {ROOT / "docs" / "writing-a-suite.md"}
README_MAX_LINES = 200

CLIS = ("analog-reference", "analog-leaderboard", "analog-distill", "analog-demo")
COMMAND_INFOS = {"", "sh", "bash", "shell", "console"}
FENCE = re.compile(r"^```([^\n`]*)\n(.*?)^```[ \t]*$", re.M | re.S)
SPAN = re.compile(r"(`+)(.+?)\1", re.S)
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)\)")
HEADING = re.compile(r"^(#{1,6})[ \t]+(.+?)[ \t]*#*[ \t]*$", re.M)
FLAG = re.compile(r"(?<![\w-])--[a-z][a-z0-9-]*")
OPTION = re.compile(r"(?<![\w-])--analog-[a-z0-9][a-z0-9-]*")
SCRIPT = re.compile(r"^(?:benchmarks|scripts)/[\w.-]+\.py$")
SEPARATORS = {"&&", "||", "|", ";"}


# ---------------------------------------------------------------- reading the docs


def documents() -> dict[Path, str]:
    """README.md and every docs/*.md, by path."""
    paths = [README, *sorted((ROOT / "docs").glob("*.md"))]
    return {path: path.read_text(encoding="utf-8") for path in paths}


def fences(text: str) -> list[tuple[str, str]]:
    """(info string, body) of each fenced block, in order."""
    return [(m.group(1).strip().lower(), m.group(2)) for m in FENCE.finditer(text)]


def prose(text: str) -> str:
    """The text with its fenced blocks blanked, every offset kept."""
    return FENCE.sub(lambda m: re.sub(r"[^\n]", " ", m.group(0)), text)


def spans(text: str) -> list[str]:
    """The inline code spans of the prose, whitespace collapsed."""
    return [" ".join(m.group(2).split()) for m in SPAN.finditer(prose(text))]


def command_lines(text: str) -> list[str]:
    """Shell commands: each line of a command block (continuations joined) and each inline code span."""
    lines = []
    for info, body in fences(text):
        if info in COMMAND_INFOS:
            lines += [line for line in body.replace("\\\n", " ").splitlines() if line.strip()]
    return lines + spans(text)


def invocations(line: str) -> list[tuple[str, list[str]]]:
    """Split a command line into (command, its arguments): a console script of ours, ``pytest``,
    ``python -m pytest``, ``python SCRIPT``, ``pip install``; words before any of them go to ``""``."""
    words, out = line.split(), [("", [])]
    i = 0
    while i < len(words):
        word = words[i]
        if word.startswith("#"):  # a comment: the rest of the line
            break
        if word in SEPARATORS:
            out.append(("", []))
        elif word in CLIS or word == "pytest":
            out.append((word, []))
        elif word in ("python", "python3") and words[i + 1:i + 3] == ["-m", "pytest"]:
            out.append(("pytest", []))
            i += 2
        elif word in ("python", "python3") and i + 1 < len(words) and words[i + 1].endswith(".py"):
            out.append((words[i + 1], []))
            i += 1
        elif word == "pip" and words[i + 1:i + 2] == ["install"]:
            out.append(("pip install", []))
            i += 1
        else:
            out[-1][1].append(word)
        i += 1
    return [(command, args) for command, args in out if command or args]


def flags_of(words: list[str]) -> list[str]:
    return [word.split("=", 1)[0] for word in words if FLAG.fullmatch(word.split("=", 1)[0])]


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading).lower()
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def anchors(text: str) -> set[str]:
    seen: dict[str, int] = {}
    out = set()
    for m in HEADING.finditer(prose(text)):
        base = slug(m.group(2))
        out.add(base if base not in seen else f"{base}-{seen[base]}")
        seen[base] = seen.get(base, 0) + 1
    return out


# ---------------------------------------------------------------- --help, once each


def _executable(name: str) -> str | None:
    path = os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])
    return shutil.which(name, path=path)


class Helps:
    """The text of each command's ``--help``, run once (in parallel for a batch)."""

    def __init__(self, workdir: Path):
        self.workdir = workdir
        self.texts: dict[tuple[str, ...], str | None] = {}

    def _run(self, key: tuple[str, ...]) -> str | None:
        if key[0] == "pytest":
            argv = [sys.executable, "-m", "pytest", *key[1:]]
        elif key[0] == "pip":
            argv = [sys.executable, "-m", "pip", *key[1:], "--help"]
        else:
            exe = _executable(key[0])
            if exe is None:
                return None
            argv = [exe, *key[1:], "--help"]
        env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONDONTWRITEBYTECODE": "1"}
        done = subprocess.run(argv, cwd=self.workdir, capture_output=True, text=True, timeout=120, env=env)
        return done.stdout if done.returncode == 0 else None

    def prefetch(self, keys) -> None:
        keys = [k for k in dict.fromkeys(keys) if k not in self.texts]
        with ThreadPoolExecutor(max_workers=4) as pool:
            for key, text in zip(keys, pool.map(self._run, keys)):
                self.texts[key] = text

    def __call__(self, *key: str) -> str | None:
        if key not in self.texts:
            self.prefetch([key])
        return self.texts[key]

    def subcommands(self, cli: str) -> list[str]:
        text = self(cli) or ""
        m = re.search(r"\{([\w,-]+)\}", text)
        return m.group(1).split(",") if m else []


def wanted_helps(docs: dict[Path, str]) -> list[tuple[str, ...]]:
    keys = [("pytest", "--help"), ("pip", "install")]
    for text in docs.values():
        for line in command_lines(text):
            for command, args in invocations(line):
                if command in CLIS:
                    keys.append((command,))
                    if args and not args[0].startswith("-"):
                        keys.append((command, args[0]))
    return keys


@pytest.fixture(scope="module")
def docs() -> dict[Path, str]:
    return documents()


@pytest.fixture(scope="module")
def helps(docs, tmp_path_factory) -> Helps:
    helps = Helps(tmp_path_factory.mktemp("help"))  # outside the project: no conftest, no ini
    helps.prefetch(wanted_helps(docs))
    return helps


_FIXTURES: list[str] = []  # pytest --fixtures, once per module


@pytest.fixture
def fixture_names(pytester) -> set[str]:
    """The fixtures ``pytest --fixtures`` lists in an empty folder; in-process, where the plugin is
    already imported (a subprocess would import torch again)."""
    if not _FIXTURES:
        _FIXTURES.append(pytester.runpytest_inprocess("--fixtures", "-p", "no:cacheprovider").stdout.str())
    return set(re.findall(r"^([a-z_]\w*)(?: \[[\w ]+\])? -- ", _FIXTURES[0], re.M))


@pytest.fixture(scope="module")
def default_config() -> dict:
    from pytest_analog.config import load_config

    return load_config().to_dict()


# ---------------------------------------------------------------- the checks (each returns problems)


def option_problems(docs: dict[Path, str], helps: Helps) -> list[str]:
    """Every ``--analog-...`` option named anywhere in the docs is one of pytest's options."""
    known = set(OPTION.findall(helps("pytest", "--help") or ""))
    if not known:
        return ["pytest --help lists no --analog- option: is the plugin installed?"]
    return [f"{path.name}: {option} is not an option of pytest --help"
            for path, text in docs.items() for option in sorted(set(OPTION.findall(text)) - known)]


def command_problems(docs: dict[Path, str], helps: Helps) -> list[str]:
    """Every command shown exists and takes the flags shown after it: our console scripts and their
    subcommands (per ``--help``; analog-demo hands the rest to pytest), pytest, pip install, and the
    project's scripts (their ``add_argument`` calls); a flag after no known command must be one of them."""
    problems = []
    every = set()
    for key, text in helps.texts.items():
        every |= set(FLAG.findall(text or ""))
    for path, text in docs.items():
        for line in command_lines(text):
            for command, args in invocations(line):
                flags = flags_of(args)
                where = f"{path.name}: `{line}`"
                if command in CLIS:
                    top = helps(command)
                    if top is None:
                        problems.append(f"{where}: {command} --help failed or {command} is not installed")
                        continue
                    subs = helps.subcommands(command)
                    key = (command,)
                    if subs and args and not args[0].startswith("-"):
                        if args[0] not in subs:
                            problems.append(f"{where}: {command} has no subcommand {args[0]} (it has {', '.join(subs)})")
                            continue
                        key = (command, args[0])
                    known = set(FLAG.findall(helps(*key) or ""))
                    if command == "analog-demo":  # the demo hands every other option to pytest
                        known |= set(FLAG.findall(helps("pytest", "--help") or ""))
                    problems += [f"{where}: {' '.join(key)} has no {flag}" for flag in flags if flag not in known]
                elif command == "pytest":
                    known = set(FLAG.findall(helps("pytest", "--help") or ""))
                    problems += [f"{where}: pytest has no {flag}" for flag in flags if flag not in known]
                elif command == "pip install":
                    known = set(FLAG.findall(helps("pip", "install") or ""))
                    problems += [f"{where}: pip install has no {flag}" for flag in flags if flag not in known]
                elif command.endswith(".py"):
                    script = ROOT / command
                    if not script.is_file():
                        problems.append(f"{where}: {command} does not exist")
                        continue
                    known = set(re.findall(r"add_argument\(\s*\"(--[a-z][a-z0-9-]*)\"", script.read_text(encoding="utf-8")))
                    problems += [f"{where}: {command} has no {flag}" for flag in flags if flag not in known]
                else:
                    problems += [f"{where}: {flag} is no option of any command the docs use"
                                 for flag in flags if flag not in every]
        for span in spans(text):
            if SCRIPT.match(span) and not (ROOT / span).is_file():
                problems.append(f"{path.name}: {span} does not exist")
    return problems


def _config_key_problems(key: str, config: dict) -> str | None:
    node = config
    for depth, part in enumerate(key.split(".")):
        if not isinstance(node, dict) or part not in node:
            return f"{key} is not a config key ({'.'.join(key.split('.')[:depth]) or 'the top level'} has no '{part}')"
        node = node[part]
    return None


def _yaml_keys(data, config, prefix="") -> list[str]:
    """Dotted keys of ``data`` as far as the default config has a mapping with keys to check them against."""
    keys = []
    for key, value in (data or {}).items():
        dotted = f"{prefix}{key}"
        keys.append(dotted)
        default = config.get(key) if isinstance(config, dict) else None
        if isinstance(value, dict) and isinstance(default, dict) and default:
            keys += _yaml_keys(value, default, dotted + ".")
    return keys


def _defined_names(text: str) -> set[str]:
    """The string constants of a document's python blocks: the names a suite it defines brings."""
    names = set()
    for info, body in fences(text):
        if info == "python":
            try:
                tree = ast.parse(body)
            except SyntaxError:
                continue  # import_problems names it
            names |= {node.value for node in ast.walk(tree) if isinstance(node, ast.Constant) and isinstance(node.value, str)}
    return names


def config_key_problems(docs: dict[Path, str], config: dict) -> list[str]:
    """Every key of a ``yaml`` block, and every dotted key that starts with a config section in a code
    span or command, is a key of the effective default config, or belongs to a suite that the same
    document defines in a python block (``gates.<its metric>``, ``<its name>.<setting>``)."""
    problems = []
    sections = "|".join(sorted(map(re.escape, config), key=len, reverse=True))
    dotted = re.compile(rf"(?<![\w./-])(?:{sections})(?:\.[A-Za-z_][\w]*)+")
    for path, text in docs.items():
        defined = _defined_names(text)
        for info, body in fences(text):
            if info in ("yaml", "yml"):
                try:
                    data = yaml.safe_load(body)
                except yaml.YAMLError as exc:
                    problems.append(f"{path.name}: a yaml block does not parse: {exc}")
                    continue
                if not isinstance(data, dict):
                    problems.append(f"{path.name}: a yaml block is not a mapping of config keys")
                    continue
                for key in _yaml_keys(data, config):
                    problem = not defined.intersection(key.split(".")) and _config_key_problems(key, config)
                    if problem:
                        problems.append(f"{path.name}: yaml block: {problem}")
        for line in command_lines(text):
            for key in dotted.findall(line):
                problem = not defined.intersection(key.split(".")) and _config_key_problems(key, config)
                if problem:
                    problems.append(f"{path.name}: `{line}`: {problem}")
    return problems


def import_problems(docs: dict[Path, str]) -> list[str]:
    """Every ``python`` block parses, and what it imports from pytest_analog exists; so does every
    module a command runs with ``-m``."""
    problems = []
    for path, text in docs.items():
        for info, body in fences(text):
            if info != "python":
                continue
            try:
                tree = ast.parse(body)
            except SyntaxError as exc:
                problems.append(f"{path.name}: a python block does not parse: {exc}")
                continue
            for node in ast.walk(tree):
                if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("pytest_analog"):
                    try:
                        module = importlib.import_module(node.module)
                    except ImportError as exc:
                        problems.append(f"{path.name}: from {node.module} import ...: {exc}")
                        continue
                    problems += [f"{path.name}: {node.module} has no {alias.name}"
                                 for alias in node.names if not hasattr(module, alias.name)]
        for line in command_lines(text):
            for module in re.findall(r"(?<!\S)-m\s+(pytest_analog[\w.]*)", line):
                if importlib.util.find_spec(module) is None:
                    problems.append(f"{path.name}: `{line}`: no module {module}")
    return problems


def fixture_problems(docs: dict[Path, str], known: set[str]) -> list[str]:
    """Every argument of a ``def test_...`` in a python block, and every name in the first column of a
    table headed "fixture", is a fixture that ``pytest --fixtures`` lists (``known``)."""
    if "fidelity_record" not in known:
        return ["pytest --fixtures lists no fidelity_record: is the plugin installed?"]
    problems = []
    for path, text in docs.items():
        named = []
        for info, body in fences(text):
            if info == "python":
                try:
                    tree = ast.parse(body)
                except SyntaxError:
                    continue  # import_problems names it
                named += [arg.arg for node in ast.walk(tree) if isinstance(node, ast.FunctionDef)
                          and node.name.startswith("test_") for arg in node.args.args]
        in_table = False
        for line in prose(text).splitlines():
            cells = [c.strip() for c in line.strip().strip("|").split("|")] if line.lstrip().startswith("|") else None
            if cells is None:
                in_table = False
            elif cells[0].lower() == "fixture":
                in_table = True
            elif in_table and not set(cells[0]) <= set("-: "):
                named += re.findall(r"`([a-z_]\w*)", cells[0])[:1]
        problems += [f"{path.name}: {name} is not a fixture (pytest --fixtures)" for name in named if name not in known]
    return problems


def link_problems(docs: dict[Path, str]) -> list[str]:
    """Every relative link (and its #anchor) points at an existing file (and heading)."""
    problems = []
    for path, text in docs.items():
        bare = SPAN.sub("", prose(text))
        for target in LINK.findall(bare):
            if re.match(r"[a-z][a-z0-9+.-]*:", target):  # http:, https:, mailto:
                continue
            file, _, anchor = target.partition("#")
            dest = (path.parent / file).resolve() if file else path
            if dest in NOT_YET and not dest.exists():
                continue
            if not dest.exists():
                problems.append(f"{path.name}: link {target}: {file} does not exist")
            elif anchor and dest.suffix == ".md" and anchor not in anchors(dest.read_text(encoding="utf-8")):
                problems.append(f"{path.name}: link {target}: {dest.name} has no heading #{anchor}")
    return problems


def ci_commands(script: str) -> list[str]:
    """The command lines of a shell script, comments, blank lines and shell set-up left out."""
    skip = ("set ", "cd ", "export ", "command -v ")
    return [line.strip() for line in script.splitlines()
            if line.strip() and not line.lstrip().startswith(("#", *skip))]


def readme_problems(readme: str, ci_script: str) -> list[str]:
    """README: at most 200 lines; its first fenced block is exactly the set-up lines .ci/run runs
    (its pip lines), near the top; its test command is the command .ci/run runs last."""
    problems = []
    lines = readme.splitlines()
    if len(lines) > README_MAX_LINES:
        problems.append(f"README.md has {len(lines)} lines, more than {README_MAX_LINES}")
    commands = ci_commands(ci_script)
    setup = [c for c in commands if c.startswith("pip ")]
    blocks = list(FENCE.finditer(readme))
    if not setup or not commands:
        return problems + [".ci/run: no pip set-up lines or no commands found"]
    if not blocks:
        return problems + ["README.md has no fenced block"]
    first = [line.strip() for line in blocks[0].group(2).splitlines() if line.strip()]
    if first != setup:
        problems.append(f"README.md's first fenced block is {first}, not .ci/run's set-up lines {setup}")
    if readme[:blocks[0].start()].count("\n") > 40:
        problems.append("README.md's set-up block starts after line 40: not near the top")
    tests = [m for m in HEADING.finditer(prose(readme)) if m.group(2).lower().startswith("test")]
    if not tests:
        return problems + ["README.md has no heading that starts with 'Test'"]
    after = [b for b in blocks if b.start() > tests[0].start()]
    shown = after[0].group(2).strip() if after else None
    if shown != commands[-1]:
        problems.append(f"README.md's test command is {shown!r}, .ci/run runs {commands[-1]!r} last")
    return problems


# ---------------------------------------------------------------- the tests


def test_docs_were_read(docs):
    """The checks below read something: the README and the guides, with commands and config blocks."""
    assert README in docs and len(docs) >= 10, sorted(p.name for p in docs)
    assert sum(len(command_lines(t)) for t in docs.values()) > 50
    assert sum(info == "yaml" for t in docs.values() for info, _ in fences(t)) >= 2


def test_analog_options_exist(docs, helps):
    assert option_problems(docs, helps) == []


def test_commands_and_flags_exist(docs, helps):
    assert command_problems(docs, helps) == []


def test_config_keys_exist(docs, default_config):
    assert config_key_problems(docs, default_config) == []


def test_python_imports_exist(docs):
    assert import_problems(docs) == []


def test_fixtures_exist(docs, fixture_names):
    assert fixture_problems(docs, fixture_names) == []


def test_links_resolve(docs):
    assert link_problems(docs) == []


def test_readme_is_a_front_door_with_ci_commands(docs):
    assert readme_problems(docs[README], CI_RUN.read_text(encoding="utf-8")) == []


# Each check finds a planted mistake: the assertions above can fail.

FAKE = ROOT / "docs" / "planted.md"


def test_a_made_up_option_is_found(helps):
    assert option_problems({FAKE: "Pass `--analog-techer=T`."}, helps) == [
        "planted.md: --analog-techer is not an option of pytest --help"]


@pytest.mark.parametrize("line, problem", [
    ("analog-reference build --teacher T --outdir R", "analog-reference build has no --outdir"),
    ("analog-leaderboard publish submissions/", "analog-leaderboard has no subcommand publish"),
    ("analog-distill --teacher T --budget 300", "analog-distill has no --budget"),
    ("analog-demo --analog-suits=logits", "analog-demo has no --analog-suits"),
    ("pytest --analog-teacher=T --junitxm=x.xml", "pytest has no --junitxm"),
    ("python benchmarks/bench_distill.py --budgets 300", "benchmarks/bench_distill.py has no --budgets"),
    ("python benchmarks/bench_nothing.py", "benchmarks/bench_nothing.py does not exist"),
    ("give it --max-promts 8", "--max-promts is no option of any command the docs use"),
])
def test_a_wrong_command_is_found(helps, line, problem):
    found = command_problems({FAKE: f"Run `{line}`."}, helps)
    assert len(found) == 1 and problem in found[0], found


def test_a_suites_own_gate_is_no_config_key_problem(default_config):
    text = '```python\nSUITE = Suite(name="probe", gates={"probe_auc": AtLeast})\n```\nSee `gates.probe_auc.min`, not `gates.probe_acc.min`.\n'
    assert config_key_problems({FAKE: text}, default_config) == [
        "planted.md: `gates.probe_acc.min`: gates.probe_acc.min is not a config key (gates has no 'probe_acc')"]


def test_a_wrong_config_key_is_found(default_config):
    text = "```yaml\ngates:\n  cka: {minimum: 0.6}\nlayers:\n  map: {8: 4}\n```\nSet `steering.alpha: [0.1]`.\n"
    assert config_key_problems({FAKE: text}, default_config) == [
        "planted.md: yaml block: gates.cka.minimum is not a config key (gates.cka has no 'minimum')",
        "planted.md: `steering.alpha: [0.1]`: steering.alpha is not a config key (steering has no 'alpha')",
    ]


def test_a_wrong_import_is_found():
    text = "```python\nfrom pytest_analog.metrics import linear_cka, linear_ckaa\n```\n`python -m pytest_analog.nothing`\n"
    assert import_problems({FAKE: text}) == [
        "planted.md: pytest_analog.metrics has no linear_ckaa",
        "planted.md: `python -m pytest_analog.nothing`: no module pytest_analog.nothing",
    ]


def test_a_wrong_fixture_is_found(fixture_names):
    text = ("```python\ndef test_x(analog_pair, analog_pairs):\n    pass\n```\n\n"
            "| fixture | what |\n| --- | --- |\n| `fidelity_record` | ok |\n| `fidelity_recorder` | no |\n")
    assert fixture_problems({FAKE: text}, fixture_names) == [
        "planted.md: analog_pairs is not a fixture (pytest --fixtures)",
        "planted.md: fidelity_recorder is not a fixture (pytest --fixtures)",
    ]


def test_a_broken_link_is_found():
    text = "[ok](metrics.md#decision-rule), [no file](nothing.md), [no heading](metrics.md#no-such-heading), `[code](x.md)`"
    assert link_problems({FAKE: text}) == [
        "planted.md: link nothing.md: nothing.md does not exist",
        "planted.md: link metrics.md#no-such-heading: metrics.md has no heading #no-such-heading",
    ]


def test_a_readme_that_strays_from_ci_is_found():
    ci = "#!/bin/sh\nset -e\npip install a\npip install -e .[test]\n\npython -m pytest\n"
    good = "# x\n\n```\npip install a\npip install -e .[test]\n```\n\n## Test\n\n```\npython -m pytest\n```\n"
    assert readme_problems(good, ci) == []
    assert readme_problems(good.replace("pip install a\n", "pip install b\n", 1), ci) == [
        "README.md's first fenced block is ['pip install b', 'pip install -e .[test]'], "
        "not .ci/run's set-up lines ['pip install a', 'pip install -e .[test]']"]
    assert readme_problems(good.replace("python -m pytest\n```", "pytest\n```"), ci) == [
        "README.md's test command is 'pytest', .ci/run runs 'python -m pytest' last"]
    assert readme_problems(good + "\n" * 200, ci) == [f"README.md has {good.count(chr(10)) + 200} lines, more than 200"]
