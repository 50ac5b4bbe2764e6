"""Imports flow one way: scripts on top; utils/, then the tasks/ package, then the pure modules (model.py,
grpo.py, ppo.py) below. Inside tasks/: base.py <- rollout.py <- the task files <- loader.py <- __init__.py.

Read from the source with ast (every import, also those inside functions), so a lazy import that closes a
circle is caught as well as a top-level one.
"""

import ast
import os

from conftest import ROOT

PURE = {"model", "grpo", "ppo"}


def project_modules():
    mods = {f[:-3]: os.path.join(ROOT, f) for f in os.listdir(ROOT) if f.endswith(".py")}
    utils = os.path.join(ROOT, "utils")
    mods.update({f"utils.{f[:-3]}": os.path.join(utils, f) for f in os.listdir(utils) if f.endswith(".py")})
    mods.pop("utils.__init__", None)
    tasks = os.path.join(ROOT, "tasks")
    mods.update({f"tasks.{f[:-3]}": os.path.join(tasks, f) for f in os.listdir(tasks) if f.endswith(".py")})
    mods["tasks"] = mods.pop("tasks.__init__")  # `from tasks import X` reads tasks/__init__.py
    return mods


def imports_of(path, mods):
    """The project modules a file imports (anywhere in it)."""
    found = set()
    for node in ast.walk(ast.parse(open(path).read())):
        # a relative import (from .base import X) would be invisible below: the project writes none
        assert not (isinstance(node, ast.ImportFrom) and node.level), f"{path}:{node.lineno}: a relative import"
        if isinstance(node, ast.ImportFrom) and node.module:
            names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
        elif isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        else:
            continue
        found |= {n for n in names if n in mods}
    return found


def test_utils_and_pure_modules_never_import_a_script():
    mods = project_modules()
    below = {m for m in mods if m.startswith(("utils.", "tasks"))} | PURE
    for m in sorted(below):
        bad = imports_of(mods[m], mods) - below
        assert not bad, f"{m} imports the top-level script(s) {sorted(bad)}"


def test_no_import_cycles():
    mods = project_modules()
    graph = {m: imports_of(p, mods) - {m} for m, p in mods.items()}

    def reaches(start, target, seen):
        for n in graph[start]:
            if n == target or (n not in seen and (seen.add(n) or reaches(n, target, seen))):
                return True
        return False

    cycles = [m for m in graph if reaches(m, m, set())]
    assert not cycles, f"import cycles through {cycles}"


def test_tasks_package_imports_downward():
    """tasks/ imports only tasks/ and the pure modules (utils/sft.py imports tasks, so a task importing utils/
    or a script is one step from a cycle); base.py and rollout.py, which every task file imports, import no
    task file; no module of the package but __init__.py imports the loader or the package itself (the
    loader imports every task file for TASKS). Bug: a task file calling load_task, or base.py reaching
    for a task's helper, closes a circle that fails at import time depending on which module is loaded first."""
    mods = project_modules()
    pkg = sorted(m for m in mods if m == "tasks" or m.startswith("tasks."))
    assert {"tasks", "tasks.base", "tasks.rollout", "tasks.loader", "tasks.chain", "tasks.chain_tool"} <= set(pkg)
    task_files = set(pkg) - {"tasks", "tasks.base", "tasks.rollout", "tasks.loader"}
    for m in pkg:
        imported = imports_of(mods[m], mods)
        outside = sorted(n for n in imported if not (n == "tasks" or n.startswith("tasks.")) and n not in PURE)
        assert not outside, f"{m} imports {outside}: tasks/ imports only tasks/ and {sorted(PURE)}"
        if m != "tasks":
            assert not imported & {"tasks", "tasks.loader"}, f"{m} imports the loader or the package itself"
        if m in ("tasks.base", "tasks.rollout"):
            assert not imported & task_files, f"{m} imports a task file: {sorted(imported & task_files)}"
    assert imports_of(mods["tasks.base"], mods) <= PURE  # the bottom of the package
