"""
The quick demo of the original nanoGRPO, real this time: GRPO and PPO each fine-tune the same small SFT
policy on arithmetic for a few dozen steps, and the reward before and after is printed for both.

    python rlhf_demo.py              # under a minute on a 2-core CPU
    python rlhf_demo.py --tiny       # a few seconds (the test; too small to learn much)

Nothing is simulated: it runs train_grpo.py and then train_ppo.py as subprocesses (each command is
printed, run it yourself to see more), from one SFT policy in --out-dir (trained by the first run if
missing, reused after), and reads back their CSV logs and JSON summaries.
  reward before  the mean reward of step 1's samples, which both methods draw from the SFT policy with
                 the same prompts and random numbers, so the two "before" numbers are equal
  reward after   the mean reward of the last 5 steps' samples
  held-out acc   greedy exact-match accuracy on the 500 held-out problems, SFT -> after RL
How it departs from the full runs (train_grpo.py, train_ppo.py defaults): a smaller GPT, SFT stopped
at a lower accuracy (--sft-target-acc), smaller batches and far fewer steps, so the numbers are noisy;
the full comparison is run_example.py.
"""

import argparse
import json
import os
import shlex
import subprocess
import sys
import time

from utils.metrics import read_csv

ROOT = os.path.dirname(os.path.abspath(__file__))


def sh(cmd):
    """Run `python cmd` from the repo root, echoing it; stop the demo if it fails."""
    cmd = [str(c) for c in cmd]
    print("$ " + " ".join(shlex.quote(c) for c in ["python", *cmd]), flush=True)
    p = subprocess.run([sys.executable, *cmd], cwd=ROOT)
    if p.returncode != 0:
        print(f"rlhf_demo.py: error: {cmd[0]} failed with exit code {p.returncode}", file=sys.stderr)
        sys.exit(p.returncode)


def main():
    parser = argparse.ArgumentParser(description="GRPO and PPO on a tiny arithmetic config: reward before and after.")
    parser.add_argument("--steps", type=int, default=60, help="RL steps for each method (>= 5)")
    parser.add_argument("--seed", type=int, default=1337, help="random seed, the same for both methods")
    parser.add_argument(
        "--out-dir", default=None, help="SFT policy, checkpoints, logs, summaries (default out/rlhf_demo[_tiny])"
    )
    parser.add_argument("--tiny", action="store_true", help="a seconds-long smoke version (tests)")
    args = parser.parse_args()
    if args.steps < 5:
        parser.error(f"--steps must be >= 5 (the 'after' reward is the mean of the last 5 steps), got {args.steps}")
    default_dir = "out/rlhf_demo_tiny" if args.tiny else "out/rlhf_demo"  # one model shape per folder
    args.out_dir = args.out_dir or default_dir
    t0 = time.time()
    os.makedirs(args.out_dir, exist_ok=True)
    if args.tiny:
        model = ["--n-layer", 1, "--n-head", 2, "--n-embd", 32, "--sft-steps", 10]
        rl = ["--steps", 3, "--batch-size", 4, "--group-size", 4, "--eval-every", 3]
    else:
        model = ["--n-layer", 2, "--n-head", 4, "--n-embd", 128, "--sft-steps", 600, "--sft-target-acc", 0.3]
        rl = ["--steps", args.steps, "--batch-size", 16, "--group-size", 8, "--eval-every", args.steps]
    common = ["--task", "arithmetic", "--seed", args.seed, "--out-dir", args.out_dir, "--no-progress", *model, *rl]

    results = {}
    for method in ("grpo", "ppo"):  # each driver with its own default hyperparameters
        log = os.path.join(args.out_dir, f"{method}.csv")
        sh([f"train_{method}.py", *common, "--log", log])
        with open(os.path.join(args.out_dir, f"{method}_summary.json")) as f:
            summary = json.load(f)
        rewards = [r for r in read_csv(log)["mean_r"] if r is not None]  # step 0 has no rollout
        last = rewards[-5:]  # the last 5 steps (all of them with --tiny)
        results[method] = {
            "before": rewards[0],
            "after": sum(last) / len(last),
            "acc": (summary["sft_eval"]["eval_acc"], summary["final_eval"]["eval_acc"]),
            "time": summary[f"{method}_time_s"],
        }

    steps = 3 if args.tiny else args.steps
    print(f"\narithmetic, {steps} steps each, the same SFT policy and prompts:")
    print(f"{'method':<6}  {'reward before -> after':>22}  {'held-out acc SFT -> RL':>22}  {'RL time':>8}")
    for method, r in results.items():
        before_after = f"{r['before']:.3f} -> {r['after']:.3f}"
        acc = f"{r['acc'][0]:.3f} -> {r['acc'][1]:.3f}"
        print(f"{method.upper():<6}  {before_after:>22}  {acc:>22}  {r['time']:>7.1f}s")
    print(
        f"(reward before = step 1, after = mean of the last {min(5, steps)} steps; demo total {time.time() - t0:.0f}s)"
    )


if __name__ == "__main__":
    main()
