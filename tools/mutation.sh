#!/usr/bin/env bash
# Mutation testing of grpo.py, ppo.py and model.py against their fast in-process tests (mutmut 3, configured in
# pyproject.toml). A fresh run every time: mutants/ is mutmut's scratch copy of the project (not committed).
#
#     bash tools/mutation.sh            # 5-7 minutes on 2 CPU cores, one worker
#
# Then `mutmut show <name>` prints a mutant's diff. Prints killed / survived / ... per module.
set -euo pipefail
cd "$(dirname "$0")/.."
export OMP_NUM_THREADS=1
rm -rf mutants
mutmut run --max-children 1 > /dev/null
mutmut results --all true | python -c '
import collections, sys
counts = collections.Counter()
survivors = []
for line in sys.stdin:
    name, _, status = line.strip().rpartition(": ")
    if not name:
        continue
    counts[name.split(".")[0], status] += 1
    counts["all", status] += 1
    if status != "killed":
        survivors.append(f"  {status:9} {name}")
for module in ("grpo", "ppo", "model", "all"):
    row = {s: n for (m, s), n in counts.items() if m == module}
    total, killed = sum(row.values()), row.get("killed", 0)
    listed = ", ".join(f"{n} {s}" for s, n in sorted(row.items()))
    print(f"{module:6} {total:4} mutants: {listed}; kill rate {killed / total:.1%}")
print("not killed:", *survivors, sep="\n")
'
