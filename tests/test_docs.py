"""Docs that cannot drift: README.md and docs/*.md against the files and scripts they name.

- every relative link and image points to a file that exists (anchors are not checked);
- every `python <script>.py ...` command (also `torchrun ... <script>.py`, `OMP_NUM_THREADS=1 python ...`)
  in a fenced code block or an inline code span names a script that exists and only flags that the
  script's `--help` lists (one `--help` subprocess per script, run in parallel and cached);
- every results/... path the docs quote exists, and every file in results/ is named by a row of the one
  command table (docs/results.md) that says which command wrote it.

Offline and fast: no training runs, only `--help`. The bugs each test catches: a renamed or removed
flag, a moved page or figure, a results file committed without its command (or deleted while quoted).
"""

import fnmatch
import functools
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
COMMAND_TABLE = ROOT / "docs" / "results.md"  # the one table: results/ file patterns -> the command that wrote them
# scripts of other repositories that a page quotes on purpose: (page, script) -> whose
EXTERNAL = {
    ("docs/bring-your-own.md", "train.py"): "karpathy/nanoGPT's train.py",
    ("docs/bring-your-own.md", "data/shakespeare_char/prepare.py"): "karpathy/nanoGPT's data preparation",
}


def rel(path):
    return path.relative_to(ROOT).as_posix()


def strip_code(text):
    """The text with fenced blocks and inline code removed (links inside code are not links)."""
    text = re.sub(r"^```.*?^```", "", text, flags=re.S | re.M)
    return re.sub(r"`[^`\n]*`", "", text)


def links(text):
    """Targets of Markdown links and images, [text](target) and ![alt](target)."""
    return re.findall(r"!?\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)", strip_code(text))


def fenced_blocks(text):
    return re.findall(r"^```[^\n]*\n(.*?)^```", text, flags=re.S | re.M)


def commands(text):
    """Shell commands of the fenced blocks (continuations joined, split at && ; | &, comments dropped)
    and of inline code spans that start like a command."""
    out = []
    for block in fenced_blocks(text):
        block = block.replace("\\\n", " ")
        for line in block.splitlines():
            out += re.split(r"&&|;|\|\||(?<![<>|])\|(?!\|)|&(?!&)", strip_comment(line))
    text_only = re.sub(r"^```.*?^```", "", text, flags=re.S | re.M)
    for span in re.findall(r"`([^`\n]+)`", text_only):
        if re.match(r"\s*(\w+=\S+\s+)*(python|torchrun)\s", span):
            out += re.split(r"&&|;", span)
    return [c.strip() for c in out if c.strip()]


def strip_comment(line):
    """Drop a trailing `# comment` that is not inside quotes."""
    quote = None
    for i, ch in enumerate(line):
        if quote:
            quote = None if ch == quote else quote
        elif ch in "'\"":
            quote = ch
        elif ch == "#" and (i == 0 or line[i - 1].isspace()):
            return line[:i]
    return line


def script_call(cmd):
    """(script, args) of a `python X.py ...` or `torchrun ... X.py ...` command, else None."""
    try:
        words = shlex.split(cmd)
    except ValueError:
        words = cmd.split()
    while words and re.match(r"^\w+=", words[0]):  # OMP_NUM_THREADS=1 python ...
        words = words[1:]
    if not words:
        return None
    if words[0] in ("python", "python3"):
        words = words[1:]
        if not words or words[0] == "-m":  # python -m pytest: a module, not a script
            return None
    elif words[0] == "torchrun":
        words = words[1:]
        while words and words[0].startswith("-"):
            words = words[1:]
    else:
        return None
    if not words or not words[0].endswith(".py"):
        return None
    script = words[0].removeprefix("../nanoGRPO/")  # run from a nanoGPT folder beside this one
    return script, words[1:]


def flags_of(args):
    """The option names a command passes: --flag, --flag=value, -o (not negative numbers)."""
    out = []
    for a in args:
        if re.match(r"^--?[A-Za-z]", a):
            out.append(a.split("=", 1)[0])
    return out


@functools.cache
def help_flags():
    """{script: set of option strings its --help lists}, one subprocess per script, all at once."""
    scripts = sorted({s for _, s, args in all_calls() if (ROOT / s).is_file() and flags_of(args)})
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    procs = {
        s: subprocess.Popen(
            [sys.executable, s, "--help"], cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        for s in scripts
    }
    out = {}
    for s, p in procs.items():
        stdout, stderr = p.communicate(timeout=300)
        assert p.returncode == 0, f"python {s} --help failed: {stderr[-500:]}"
        out[s] = parse_help(stdout)
    return out


def parse_help(text):
    """Option strings of argparse's help: the lines of the options sections that start with '-'."""
    found = set()
    for line in text.splitlines():
        m = re.match(r"^ {1,4}(-\S.*)$", line)
        if m:
            head = re.split(r"\s{2,}", m.group(1))[0]  # the option column, before its help text
            found.update(re.findall(r"(?<![\w-])(--?[A-Za-z][\w-]*)", head))
    return found


@functools.cache
def all_calls():
    """(page, script, args) of every script command in README.md and docs/."""
    out = []
    for page in DOCS:
        for cmd in commands(page.read_text()):
            call = script_call(cmd)
            if call:
                out.append((rel(page), call[0], tuple(call[1])))
    return out


def test_every_relative_link_and_image_exists():
    broken = []
    for page in DOCS:
        for target in links(page.read_text()):
            if re.match(r"^[a-z]+:", target) or target.startswith("#"):  # https:, mailto:, an anchor on the page
                continue
            path = target.split("#", 1)[0]
            if not (page.parent / path).exists():
                broken.append(f"{rel(page)}: {target}")
    assert not broken, "links to files that do not exist:\n" + "\n".join(broken)


def test_every_quoted_script_exists_and_takes_the_quoted_flags():
    calls = all_calls()
    assert len(calls) > 50, "the command parser found too few commands: it is broken"
    missing, unknown = [], []
    for page, script, args in calls:
        if (page, script) in EXTERNAL:
            continue
        if not (ROOT / script).is_file():
            missing.append(f"{page}: python {script}")
            continue
        flags = flags_of(args)
        if flags:
            known = help_flags()[script]
            unknown += [f"{page}: python {script} ... {f}" for f in flags if f not in known]
    assert not missing, "commands name scripts that do not exist:\n" + "\n".join(missing)
    assert not unknown, "commands use flags the script's --help does not list:\n" + "\n".join(sorted(set(unknown)))


def quoted_results(text):
    """results/... paths in a page, as glob patterns: {a,b} expanded, <N> and $N placeholders as *."""
    out = set()
    for m in re.findall(r"(?<![\w./-])results/([\w.*{},<>$-]+)", text):
        m = m.rstrip(".,:;")
        if not m:
            continue
        for p in expand_braces(m):
            out.add(re.sub(r"<[^>]*>|\$\{?\w+\}?", "*", p))
    return out


def expand_braces(pattern):
    m = re.search(r"\{([^{}]*)\}", pattern)
    if not m:
        return [pattern]
    return [e for alt in m.group(1).split(",") for e in expand_braces(pattern[: m.start()] + alt + pattern[m.end() :])]


def results_files():
    return sorted(p.name for p in (ROOT / "results").iterdir() if p.is_file())


def test_every_quoted_results_file_exists():
    files = results_files()
    missing = []
    for page in DOCS:
        for pat in quoted_results(page.read_text()):
            if not fnmatch.filter(files, pat):
                missing.append(f"{rel(page)}: results/{pat}")
    assert not missing, "quoted results files that do not exist:\n" + "\n".join(sorted(missing))


def command_table_patterns():
    """The first column's `patterns` of the command table in docs/results.md (| files | command |)."""
    text = COMMAND_TABLE.read_text()
    start = text.index("| files | command |")
    patterns = []
    for line in text[start:].splitlines()[2:]:
        if not line.startswith("|"):
            break
        first = line.split("|")[1]
        for p in re.findall(r"`([^`]+)`", first):
            patterns += expand_braces(p)
    return patterns


def test_every_results_file_is_named_by_the_command_table():
    patterns = command_table_patterns()
    assert patterns, "no command table found in docs/results.md"
    unnamed = [f for f in results_files() if not any(fnmatch.fnmatch(f, p) for p in patterns)]
    assert not unnamed, "files in results/ that docs/results.md's command table does not name:\n" + "\n".join(unnamed)
    unused = [p for p in patterns if not fnmatch.filter(results_files(), p)]
    assert not unused, "command-table rows that name no file in results/: " + ", ".join(unused)


@pytest.mark.parametrize(
    "cmd, want",
    [
        ("python train_grpo.py --task chain --steps=3  # a comment", ("train_grpo.py", ["--task", "--steps"])),
        ("OMP_NUM_THREADS=1 python clip_grpo.py --model-name tiny", ("clip_grpo.py", ["--model-name"])),
        ("torchrun --standalone --nproc_per_node=2 train_grpo.py --seed 1", ("train_grpo.py", ["--seed"])),
        ("python -m pytest -q tests/test_grpo.py", None),
        ("python plot.py --metric eval_acc -o out.png a.csv", ("plot.py", ["--metric", "-o"])),
    ],
)
def test_the_command_parser(cmd, want):
    """The parser itself: a bug here would let a renamed flag pass unseen."""
    call = script_call(strip_comment(cmd))
    got = None if call is None else (call[0], flags_of(call[1]))
    assert got == want


def test_fenced_commands_are_split_at_continuations_and_separators():
    text = "```bash\npython a.py --x 1 \\\n  --y 2 && python b.py --z; python c.py & sleep 1\n```\n"
    calls = [script_call(c) for c in commands(text)]
    assert [(s, flags_of(a)) for s, a in filter(None, calls)] == [
        ("a.py", ["--x", "--y"]),
        ("b.py", ["--z"]),
        ("c.py", []),
    ]


def test_ci_runs_exactly_the_readme_test_command():
    """.ci/run runs the README's test command verbatim, and the README's install uses PyTorch's CPU wheel index.
    Bug: one edited without the other (CI then tests another install than a new user gets)."""
    ci = (ROOT / ".ci" / "run").read_text().split("# --- the README's test command, verbatim:\n")[1].strip()
    readme = (ROOT / "README.md").read_text()
    assert f"```bash\n{ci}\n```" in readme
    assert "--index-url https://download.pytorch.org/whl/cpu" in ci
