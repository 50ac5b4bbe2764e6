"""
The main job: the whole nanoGRPO pipeline in one command, each step a real run of a script you can
also run by hand (every command is printed before it runs).

    python run_example.py                      # about 10 minutes on 2 CPU cores
    python run_example.py --seeds 3            # the committed logs/ and README figures (longer)

Steps:
  1. arithmetic: SFT (if out/arithmetic/policy.pth is missing) -> GRPO            (train_grpo.py)
  2. arithmetic: PPO from the same SFT policy, same prompts and samples per step  (train_ppo.py)
  3. the four comparison plots of the original, GRPO vs PPO, mean and band over --seeds (plot.py)
  4. shakespeare RLHF: SFT -> preference pairs -> reward model -> GRPO against it
     (simple_example.py, reward_model.py, train_grpo.py --task shakespeare), at each --betas,
     and the overoptimisation figure: gold and proxy score against KL to the reference
  5. logs/results.md: a table per method (final reward, accuracy, KL, wall time, samples, memory)
"""

import argparse
import json
import os
import shlex
import subprocess
import sys
import time

from plot import plot_curves
from utils.metrics import read_csv

ROOT = os.path.dirname(os.path.abspath(__file__))


def sh(*cmd):
    """Run one script as a subprocess, echoing the command; stop the pipeline if it fails."""
    cmd = [str(c) for c in cmd]
    print("\n$ " + " ".join(shlex.quote(c) for c in ["python", *cmd]), flush=True)
    t0 = time.time()
    p = subprocess.run([sys.executable, *cmd], cwd=ROOT)
    if p.returncode != 0:
        print(f"run_example.py: error: step failed with exit code {p.returncode}: {' '.join(cmd)}", file=sys.stderr)
        sys.exit(p.returncode)
    return time.time() - t0


def last(cols, name):
    """Last non-empty value of a CSV column."""
    vals = [v for v in cols.get(name, []) if v is not None]
    return vals[-1] if vals else float("nan")


def tail_mean(cols, name, k=20):
    """Mean of the last k values of a noisy per-step column."""
    vals = [v for v in cols.get(name, []) if v is not None][-k:]
    return sum(vals) / len(vals) if vals else float("nan")


def main():
    parser = argparse.ArgumentParser(description="SFT -> reward model -> GRPO -> PPO, plots and a results table.")
    parser.add_argument("--seeds", type=int, default=1, help="seeds per method for the GRPO-vs-PPO comparison")
    parser.add_argument("--steps", type=int, default=None, help="RL steps per arithmetic run (default: each driver's)")
    parser.add_argument("--shakespeare-steps", type=int, default=100, help="GRPO steps against the reward model")
    parser.add_argument("--betas", type=float, nargs="+", default=[0.04], help="KL strengths for the RLHF runs")
    parser.add_argument("--out-dir", default="out", help="checkpoints (one folder per task)")
    parser.add_argument("--logs", default="logs", help="where the CSVs, plots and results.md go")
    parser.add_argument("--skip-rlhf", action="store_true", help="only the arithmetic GRPO-vs-PPO part")
    parser.add_argument("--skip-ppo", action="store_true", help="no PPO runs (GRPO and RLHF only)")
    parser.add_argument("--tiny", action="store_true", help="a seconds-long smoke version (tests)")
    args = parser.parse_args()
    if args.seeds < 1:
        parser.error("--seeds must be >= 1")
    t_start = time.time()
    L = args.logs
    os.makedirs(L, exist_ok=True)
    tiny = ["--n-layer", 1, "--n-head", 2, "--n-embd", 32, "--sft-steps", 50, "--batch-size", 4, "--group-size", 4] if args.tiny else []
    steps = ["--steps", args.steps] if args.steps else (["--steps", 3] if args.tiny else [])
    common = ["--no-progress", "--eval-every", 2 if args.tiny else 25, *tiny, *steps]

    # --- 1-2. arithmetic: GRPO and PPO from the same SFT policy
    arith = os.path.join(args.out_dir, "arithmetic")
    methods = ["grpo"] if args.skip_ppo else ["grpo", "ppo"]
    runs = {m: [] for m in methods}
    for seed in range(1, args.seeds + 1):
        for m in methods:
            name = m if args.seeds == 1 else f"{m}_seed{seed}"
            log = os.path.join(L, f"{name}.csv")
            out = arith if seed == 1 else os.path.join(arith, f"seed{seed}")
            if seed > 1:  # the same SFT policy for every seed: only the RL randomness changes
                os.makedirs(out, exist_ok=True)
                if not os.path.exists(os.path.join(out, "policy.pth")):
                    with open(os.path.join(arith, "policy.pth"), "rb") as src, open(os.path.join(out, "policy.pth"), "wb") as dst:
                        dst.write(src.read())
            wall = sh(f"train_{m}.py", "--task", "arithmetic", "--seed", seed, "--out-dir", out, "--log", log, *common)
            with open(os.path.join(out, f"{m}_summary.json")) as f:
                summary = json.load(f)
            runs[m].append({"log": log, "wall": wall, "summary": summary})

    # --- 3. the comparison plots
    csvs = [r["log"] for m in methods for r in runs[m]]
    smooth = 1 if args.tiny else 10
    for metric, fname in [("mean_r", "reward"), ("kl", "kl"), ("entropy", "entropy"), ("loss", "loss"), ("eval_acc", "accuracy")]:
        plot_curves(csvs, metric, os.path.join(L, f"{fname}_comparison.png"), smooth_n=1 if metric == "eval_acc" else smooth, title=f"arithmetic: {metric}, GRPO vs PPO")

    # --- 4. shakespeare RLHF against a learned reward model, and overoptimisation
    rlhf = []
    if not args.skip_rlhf:
        shake = os.path.join(args.out_dir, "shakespeare")
        rm_tiny = ["--n-layer", 1, "--n-head", 2, "--n-embd", 32] if args.tiny else []
        if args.tiny:
            sh("simple_example.py", "--out-dir", shake, "--pairs", os.path.join(shake, "prefs.jsonl"), "--sft-steps", 20, "--n-prompts", 16, *rm_tiny)
            sh("reward_model.py", "--pairs", os.path.join(shake, "prefs.jsonl"), "--out", os.path.join(shake, "rm.pth"), "--steps", 5, *rm_tiny)
        for beta in args.betas:
            log = os.path.join(L, f"rlhf_beta{beta:g}.csv")
            sh("train_grpo.py", "--task", "shakespeare", "--beta", beta, "--out-dir", shake, "--log", log, *common, "--steps", 3 if args.tiny else args.shakespeare_steps)
            with open(os.path.join(shake, "grpo_summary.json")) as f:
                rlhf.append({"beta": beta, "log": log, "summary": json.load(f)})
        logs = [r["log"] for r in rlhf]
        labels = [f"beta={r['beta']:g}" for r in rlhf]
        plot_curves(logs, "gold_r", os.path.join(L, "overopt_gold_vs_kl.png"), smooth_n=smooth, x="kl", labels=labels, title="gold score vs KL (what we wanted)")
        plot_curves(logs, "mean_r", os.path.join(L, "overopt_proxy_vs_kl.png"), smooth_n=smooth, x="kl", labels=labels, title="reward-model score vs KL (what we optimised)")

    # --- 5. results table
    lines = [f"Measured by `python run_example.py {' '.join(sys.argv[1:])}`; {args.seeds} seed(s) per method, mean over seeds.", ""]
    lines += ["| method | held-out acc (SFT -> final) | final reward (last 20 steps) | final KL | wall time (s) | samples seen | params+grads+optimizer (MiB) | peak RSS / CUDA (MiB) |"]
    lines += ["|---|---|---|---|---|---|---|---|"]
    for m in methods:
        rs = runs[m]
        mean = lambda xs: sum(xs) / len(xs)
        cols = [read_csv(r["log"]) for r in rs]
        s0 = rs[0]["summary"]
        mem = s0.get("memory", {})
        held = mean([r["summary"]["final_eval"]["eval_acc"] for r in rs])
        state = sum(mem.get(k, 0) for k in mem if k in ("params_mib", "grads_mib", "optimizer_mib", "value_params_mib", "value_grads_mib", "value_optimizer_mib"))
        peak = mem.get("peak_cuda_mib", mem.get("peak_rss_mib", float("nan")))
        lines.append(
            f"| {m.upper()} | {s0['sft_eval']['eval_acc']:.3f} -> {held:.3f} | {mean([tail_mean(c, 'mean_r') for c in cols]):.3f} | "
            f"{mean([tail_mean(c, 'kl') for c in cols]):.3f} | {mean([r['wall'] for r in rs]):.0f} | {s0['samples_seen']} | {state:.1f} | {peak:.0f} |"
        )
    if rlhf:
        lines += ["", "Shakespeare RLHF against the learned reward model (proxy) and the lexicon rule (gold), last 20 steps:", ""]
        lines += ["| beta | proxy (RM) score | gold score | KL | held-out gold (SFT -> final) |", "|---|---|---|---|---|"]
        for r in rlhf:
            c = read_csv(r["log"])
            s = r["summary"]
            lines.append(f"| {r['beta']:g} | {tail_mean(c, 'mean_r'):.3f} | {tail_mean(c, 'gold_r'):.3f} | {tail_mean(c, 'kl'):.3f} | {s['sft_eval']['eval_r']:.3f} -> {s['final_eval']['eval_r']:.3f} |")
    lines += ["", f"Total wall time {time.time() - t_start:.0f} s."]
    with open(os.path.join(L, "results.md"), "w") as f:
        f.write("\n".join(lines) + "\n")
    print("\n" + "\n".join(lines))


if __name__ == "__main__":
    main()
