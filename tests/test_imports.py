"""Imports flow one way: scripts on top; utils/ and the pure modules (model.py, grpo.py, ppo.py) below.

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
    return mods


def imports_of(path, mods):
    """The project modules a file imports (anywhere in it)."""
    found = set()
    for node in ast.walk(ast.parse(open(path).read())):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
        elif isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        else:
            continue
        found |= {n for n in names if n in mods}
    return found


def test_utils_and_pure_modules_never_import_a_script():
    mods = project_modules()
    below = {m for m in mods if m.startswith("utils.")} | PURE
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
