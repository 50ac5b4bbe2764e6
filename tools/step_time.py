"""The whole GRPO step time of a checkout's own code at bench.py's fixed shapes (its bench_grpo: rollout,
reward, reference log-probs, update; the best of 3 steps after a warm-up), to set two revisions side by side.

    git worktree add /tmp/pre 8e5441d
    for r in 1 2 3; do for repo in /tmp/pre .; do for i in 0 1; do
        OMP_NUM_THREADS=1 python tools/step_time.py $repo $i; done; done; done

Prints one JSON line per call: the checkout, the shape (n_layer, n_embd, n_head, B, G, T), the step's seconds
and its phases. docs/memory.md: the flags-off step time before and after --micro-batch-size and the plain
head's memory work, interleaved in one run.
"""

import argparse
import json
import os
import sys
from contextlib import nullcontext


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("repo", help="a checkout of this project (its bench.py, model.py and grpo.py are timed)")
    parser.add_argument("shape", type=int, choices=[0, 1], help="bench.FIXED_SHAPES index: 0 = 4 x 128, 1 = 6 x 384")
    parser.add_argument("--repeats", type=int, default=3, help="timed steps after the warm-up (the best is kept)")
    args = parser.parse_args()
    repo = os.path.abspath(args.repo)
    if not os.path.exists(os.path.join(repo, "bench.py")):
        parser.error(f"{args.repo} is not a checkout of this project (no bench.py)")
    sys.path.insert(0, repo)
    os.chdir(repo)
    import bench  # the checkout's own modules from here on
    from model import CharTokenizer
    from tasks.shakespeare import ShakespeareTask

    # bench.main's defaults for everything bench_grpo reads (seed, repeats, baseline, compile, ...)
    captured = {}
    parse = argparse.ArgumentParser.parse_args

    def grab(self, *a, **k):
        captured["args"] = parse(self, *a, **k)
        raise SystemExit(0)

    argparse.ArgumentParser.parse_args = grab
    sys.argv = ["bench.py", "--repeats", str(args.repeats), "--device", "cpu"]
    try:
        bench.main()
    except SystemExit:
        pass
    argparse.ArgumentParser.parse_args = parse
    task = ShakespeareTask()
    shape = bench.FIXED_SHAPES[args.shape]
    rows = bench.bench_grpo(shape, task, CharTokenizer(task.chars), captured["args"], "cpu", nullcontext(), 1.0, None)
    row = next(iter(rows.values()))
    print(json.dumps({"repo": args.repo, "shape": shape, "step_s": row["step_s"], "phases": row["phases"]}))


if __name__ == "__main__":
    main()
