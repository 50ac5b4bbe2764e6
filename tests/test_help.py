"""--help that a learner can read: the drivers' flags in groups, each default said once, the debug flags
hidden but still working; and the console's numbers rounded.

The bugs each test catches: a flag added to the parser instead of its group (it lands in "options"), a
help text that says its default while the formatter appends "(default: X)" too, a None default shown as
"(default: None)", a fault-injection flag listed for users or (hidden) no longer parsed, float noise such
as 0.10000000000000088 printed on the console.
"""

import re

import pytest
from conftest import run

from utils.common import console

DRIVERS = {
    "train_grpo.py": [
        "task",
        "GRPO",
        "rollout",
        "optimizer",
        "model",
        "memory",
        "logging and evaluation",
        "checkpoint and run",
        "device",
        "async rollouts",
        "reward model",
    ],
    "train_ppo.py": [
        "task",
        "PPO",
        "rollout",
        "optimizer",
        "model",
        "logging and evaluation",
        "checkpoint and run",
        "device",
        "reward model",
    ],
}
HIDDEN = {
    "train_grpo.py": ["--debug-trace", "--debug-nan-steps", "--debug-nan-update", "--top-k"],
    "train_ppo.py": ["--debug-nan-steps", "--debug-nan-update", "--top-k"],
}
# every script with a --help; the drivers above, and the small ones checked for double defaults only
SCRIPTS = [
    *DRIVERS,
    "clip_grpo.py",
    "reward_model.py",
    "simple_example.py",
    "run_example.py",
    "bench.py",
    "view.py",
    "plot.py",
    "rlhf_demo.py",
    "gpu_example.py",
]


def sections(text):
    """{section title: [(option column, help text)]} of argparse's help, the help text joined over its lines."""
    out, title, entry = {}, None, None
    for line in text.splitlines():
        if line and not line.startswith(" ") and line.endswith(":"):  # "options:", "task:", "GRPO (...):"
            title, entry = line[:-1], None
            out[title] = []
        elif title is not None and re.match(r"^ {1,4}-", line):  # an option line
            head, _, help_ = line.strip().partition("  ")
            entry = [head, help_.strip()]
            out[title].append(entry)
        elif title is not None and entry is not None and line.startswith(" " * 6):  # its help, continued
            entry[1] = (entry[1] + " " + line.strip()).strip()
    return out


@pytest.fixture(scope="module")
def helps():
    out = {}
    for s in SCRIPTS:
        p = run(s, "--help", env={"COLUMNS": "100"})
        assert p.returncode == 0, p.stderr
        out[s] = p.stdout
    return out


def test_sections_parser():
    text = (
        "usage: x [flags]\n\noptions:\n  -h, --help  show\n\ntask:\n  --task TASK           what to learn\n"
        "                        (default: arithmetic)\n  --data DATA\n                        the file\n"
    )
    assert sections(text) == {
        "options": [["-h, --help", "show"]],
        "task": [["--task TASK", "what to learn (default: arithmetic)"], ["--data DATA", "the file"]],
    }


@pytest.mark.parametrize("script", list(DRIVERS))
def test_driver_flags_are_in_their_groups(helps, script):
    got = sections(helps[script])
    titles = [t.split(" (")[0] for t in got if t != "options"]
    assert titles == DRIVERS[script]
    assert [h for h, _ in got["options"]] == ["-h, --help"]  # every flag in a group, none left over
    assert all(got[t] for t in got), "an empty group"
    first = [h.split()[0] for t, rows in got.items() if t.startswith(("GRPO", "PPO")) for h, _ in rows][:3]
    assert first == ["--steps", "--batch-size", "--group-size"]


@pytest.mark.parametrize("script", list(DRIVERS))
def test_debug_flags_are_hidden_and_still_parse(helps, script):
    shown = helps[script]
    for flag in HIDDEN[script]:
        assert flag not in shown
    assert "debug" not in shown.lower() and "tests only" not in shown and "fault injection" not in shown
    # argparse rejects an unknown flag (exit 2, "unrecognized arguments"); a hidden one parses, and the
    # run then stops at the bad --n-head, after parse_args
    args = ["--debug-nan-steps", "2", "3", "--debug-nan-update", "1", "--n-embd", "30", "--n-head", "4"]
    if script == "train_grpo.py":
        args += ["--debug-trace", "t.pt"]
    p = run(script, *args)
    assert p.returncode == 2 and "not divisible by --n-head" in p.stderr, p.stderr


@pytest.mark.parametrize("script", SCRIPTS)
def test_each_default_is_said_once(helps, script):
    bad = []
    for rows in sections(helps[script]).values():
        for head, help_ in rows:
            if "(default: None)" in help_ or len(re.findall(r"\bdefault\b", help_)) > 1:
                bad.append(f"{head}: {help_}")
    assert not bad, f"python {script} --help:\n" + "\n".join(bad)


def test_the_grpo_flags_say_their_task_defaults_in_words(helps):
    rows = {h.split()[0]: t for rows in sections(helps["train_grpo.py"]).values() for h, t in rows}
    assert rows["--steps"].endswith("(default: the task's rl_steps, arithmetic 1200, shakespeare 100)")
    assert rows["--max-new-tokens"].endswith("(default: the task's)")
    assert rows["--lr"].endswith("(default: 0.0003)")  # the formatter's, where the text says none
    assert "(default" not in rows["--mask-truncated"]  # a switch is off unless given


def test_console_rounds_to_significant_digits():
    assert console(0.10000000000000088) == 0.1 and str(console(0.92600000001)) == "0.926"
    assert console(1.9824259281158447, 4) == 1.982 and console(-0.0123456, 4) == -0.01235
    assert console(0.000123456) == 0.000123  # small numbers keep their digits (a KL), not 0.000
    assert console(1234.56) == 1235.0  # never into the integer part
    assert console({"eval_acc": 0.5, "n": 3, "s": "x", "zero": 0.0}) == {"eval_acc": 0.5, "n": 3, "s": "x", "zero": 0.0}
    assert console(float("nan")) != console(float("nan"))  # NaN passes through, printed as nan
