"""--task: the built-in tasks by name, and load_task, which also loads a task class from a file, a module or
a JSONL file, checks it (tasks/base.py's check_task) and fills in the optional attributes' defaults.

    python train_grpo.py --task chain_tool
    python train_grpo.py --task examples/reverse_task.py:ReverseTask

This module imports every task module; they import tasks/base.py and tasks/rollout.py, never this one.
"""

import functools
import importlib
import importlib.util
import inspect
import os
import re
import sys

import torch

from tasks.arithmetic import ArithmeticTask
from tasks.base import TaskError, check_task
from tasks.chain import ChainTask
from tasks.chain_tool import ChainToolTask
from tasks.jsonl import JsonlTask
from tasks.rollout import evaluate_greedy, sft_batch_from_examples
from tasks.shakespeare import ShakespeareTask

TASKS = {"arithmetic": ArithmeticTask, "shakespeare": ShakespeareTask, "chain": ChainTask, "chain_tool": ChainToolTask}
TASKS_WITH_DATA = {"shakespeare"}  # the built-in tasks that read --data
SPEC_FORMS = (
    "arithmetic, shakespeare, chain, chain_tool, path/to/my_task.py:Class, some.module:Name, "
    "jsonl:data.jsonl[,heldout.jsonl]"
)


def load_task(spec, data=None):
    """The task named by spec (the --task forms of tasks/base.py), checked and with the optional attributes'
    defaults filled in. data (--data) goes to the class as data_path=. Raises TaskError (one line)."""
    if spec in TASKS:
        if data and spec not in TASKS_WITH_DATA:
            raise TaskError(f"--data does not apply to --task {spec}: it reads no data file")
        try:
            return TASKS[spec](**({"data_path": data} if data else {}))
        except FileNotFoundError as e:
            raise TaskError(str(e)) from None
    if spec.startswith("jsonl:"):
        paths = spec[len("jsonl:") :].split(",")
        if data:
            raise TaskError(f"--data does not apply to {spec}: the spec names its files")
        if len(paths) > 2 or not all(paths):
            raise TaskError(f"--task {spec}: expected jsonl:train.jsonl or jsonl:train.jsonl,heldout.jsonl")
        return JsonlTask(*paths)
    where, sep, attr = spec.rpartition(":")
    if not sep or not where or not attr:
        raise TaskError(f"unknown --task {spec!r}: use one of {SPEC_FORMS}")
    if where.endswith(".py") or os.sep in where or "/" in where:
        source, module = where, _import_file(where)
    else:
        try:
            module = importlib.import_module(where)
        except ModuleNotFoundError as e:
            if e.name is None or not (where == e.name or where.startswith(e.name + ".")):
                raise  # the module exists, something it imports does not: the traceback says what
            raise TaskError(f"--task {spec}: no module named {e.name!r} on the Python path") from None
        except SyntaxError as e:
            raise TaskError(f"{e.filename}:{e.lineno}: syntax error: {e.msg}") from None
        source = getattr(module, "__file__", None) or where
    if not hasattr(module, attr):
        found = sorted(n for n, v in vars(module).items() if isinstance(v, type) and v.__module__ == module.__name__)
        raise TaskError(f"{source}: no class or object named {attr!r} (classes there: {', '.join(found) or 'none'})")
    obj = getattr(module, attr)
    if isinstance(obj, type):
        try:
            line = inspect.getsourcelines(obj)[1]
            source = f"{source}:{line}"
        except (OSError, TypeError):  # a class made at run time has no source lines: name the file alone
            pass
        if data and not _takes_data_path(obj):
            raise TaskError(f"{source}: --data is given but {attr}() takes no data_path= argument to pass it to")
        obj = obj(**({"data_path": data} if data else {}))
    elif data:
        raise TaskError(f"{source}: --data is given but {attr} is an object, not a class to pass it to")
    check_task(obj, f"{source}: {attr}")
    return with_defaults(obj)


def _takes_data_path(cls):
    """Whether cls(data_path=...) is a valid call (a data_path parameter, or **kwargs)."""
    try:
        params = inspect.signature(cls).parameters.values()
    except (TypeError, ValueError):  # no signature to read: let the call itself decide
        return True
    return any(p.name == "data_path" or p.kind is inspect.Parameter.VAR_KEYWORD for p in params)


def _import_file(path):
    if not os.path.isfile(path):
        raise TaskError(f"{path}: file not found")
    name = "nanogrpo_task_" + re.sub(r"\W", "_", os.path.splitext(os.path.basename(path))[0])
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None:
        raise TaskError(f"{path}: not a Python file (name it *.py)")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses and pickle look classes up by module name
    try:
        spec.loader.exec_module(module)
    except SyntaxError as e:
        del sys.modules[name]
        raise TaskError(f"{e.filename}:{e.lineno}: syntax error: {e.msg}") from None
    return module


def with_defaults(task):
    """Set the optional attributes task lacks to their defaults (the table in tasks/base.py); returns task."""
    defaults = {"uses_eos": True, "rl_steps": 200, "sft_steps": 1500, "correct": None, "chars": None}
    defaults.update(sft_examples=None, sft_batch=None, sft_progress=None, tool=None, tool_trigger=None)
    for attr, default in defaults.items():
        if not hasattr(task, attr):
            setattr(task, attr, default)
    if task.sft_batch is None and task.sft_examples is not None:
        task.sft_batch = lambda g, n, tok: sft_batch_from_examples(
            task.sft_examples(g, n), tok, task.tool, task.tool_trigger
        )
    if not hasattr(task, "evaluate"):
        task.evaluate = functools.partial(evaluate_greedy, task)
    if not hasattr(task, "block_size"):
        seen = list(task.heldout) + task.sample_prompts(torch.Generator().manual_seed(0), 1024)
        task.block_size = max(len(p) for p in seen) + task.max_new_tokens
    return task


def add_task_args(parser):
    """--task, --reward, --data: the flags of the RL drivers (train_grpo.py, train_ppo.py) that pick what is learned."""
    parser.add_argument(
        "--task",
        default="arithmetic",
        help=f"what to learn: {SPEC_FORMS} (tasks/base.py describes the task interface)",
    )
    parser.add_argument(
        "--reward",
        choices=["rm", "rule"],
        default=None,
        help="shakespeare: the learned reward model (gold = the lexicon rule, logged as gold_r) or the rule itself "
        "(default: rm with --init-from scratch, rule with a model you bring: the reward model learns from samples "
        "of the scratch SFT policy)",
    )
    parser.add_argument(
        "--data",
        default=None,
        help="shakespeare: the text file (default data/tinyshakespeare.txt); a task class: passed as data_path=",
    )
