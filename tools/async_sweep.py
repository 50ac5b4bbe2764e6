"""The async measurements of docs/async.md: throughput sync vs async at equal samples, and held-out accuracy against
the staleness S with and without an off-policy correction. Every run is a real train_grpo.py run; its CSV is kept.

    python tools/async_sweep.py speed --task chain --steps 20       # completions/s: sync (2 and 1 threads), async
    python tools/async_sweep.py accuracy --seeds 1 2 3 --steps 120  # eval_acc at S = 0, 1, 2, 4 x corrections
    python tools/async_sweep.py table --out logs/async               # the tables and the plot from the CSVs

Each run starts from the task's SFT policy in <out>/sft_<task>/policy.pth (trained once, by the first run). Sync
runs are one process with OMP_NUM_THREADS=2; async runs are torchrun with one learner and one worker
(--rollout-workers 1), OMP_NUM_THREADS=1 each: the same two cores.
"""

import argparse
import glob
import os
import shutil
import subprocess
import sys

import pandas as pd

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BG = 32 * 8  # completions per step: train_grpo.py's default --batch-size x --group-size, which the sweep keeps


def train(out, name, task, seed, steps, extra, workers=None, threads=None):
    """One train_grpo.py run into <out>/<name>.csv (skipped when the CSV is complete). Returns the CSV path."""
    csv = os.path.join(out, f"{name}.csv")
    if os.path.exists(csv) and len(pd.read_csv(csv)) == steps + 1:
        return csv
    sft = os.path.join(out, f"sft_{task}")
    run_dir = os.path.join(out, "runs", name)
    os.makedirs(run_dir, exist_ok=True)
    if os.path.exists(os.path.join(sft, "policy.pth")):
        shutil.copy(os.path.join(sft, "policy.pth"), run_dir)
    env = dict(os.environ, OMP_NUM_THREADS=str(threads or (1 if workers else 2)), PYTHONUNBUFFERED="1")
    flags = ["--task", task, "--seed", seed, "--steps", steps, "--out-dir", run_dir, "--metrics-csv", csv]
    flags += ["--no-progress", *extra]
    if workers:
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={workers + 1}"]
        cmd += ["train_grpo.py", *map(str, flags), "--rollout-workers", str(workers)]
    else:
        cmd = [sys.executable, "train_grpo.py", *map(str, flags)]
    print("$", " ".join(cmd[1:]), flush=True)
    p = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
    if p.returncode:
        sys.exit(f"failed ({p.returncode}): {p.stderr[-2000:]}")
    if not os.path.exists(os.path.join(sft, "policy.pth")):
        os.makedirs(sft, exist_ok=True)
        shutil.copy(os.path.join(run_dir, "policy.pth"), sft)
    return csv


CONFIGS = [(0, "none"), (1, "none"), (2, "none"), (4, "none"), (1, "tis"), (2, "tis"), (4, "tis")]
CONFIGS += [(2, "mis"), (2, "decoupled"), (4, "mis"), (4, "decoupled")]


def name_of(task, s, corr, seed):
    return f"{task}_s{s}_{corr}_seed{seed}"


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("what", choices=["speed", "accuracy", "table"])
    parser.add_argument("--task", default="arithmetic")
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    parser.add_argument("--steps", type=int, default=120)
    parser.add_argument("--lr", type=float, default=None, help="train_grpo.py --lr (default: its default)")
    parser.add_argument("--configs", default=None, help="comma list of S:correction (default: all of CONFIGS)")
    parser.add_argument("--out", default="logs/async")
    parser.add_argument("--prefix", default="", help="table: the CSVs' name prefix (results/: async_)")
    args = parser.parse_args()
    os.makedirs(args.out, exist_ok=True)
    extra = ["--eval-every", 20] + (["--lr", args.lr] if args.lr else [])
    if args.what == "speed":  # sync (2 threads, then 1) and async (S = 1) alternating, seed by seed
        for seed in args.seeds:
            train(args.out, f"speed_{args.task}_sync_seed{seed}", args.task, seed, args.steps, extra)
            train(args.out, f"speed_{args.task}_sync1thread_seed{seed}", args.task, seed, args.steps, extra, threads=1)
            train(args.out, f"speed_{args.task}_async_seed{seed}", args.task, seed, args.steps,
                  extra + ["--max-staleness", 1], workers=1)  # fmt: skip
    elif args.what == "accuracy":
        configs = CONFIGS
        if args.configs:
            configs = [(int(c.split(":")[0]), c.split(":")[1]) for c in args.configs.split(",")]
        for seed in args.seeds:
            for s, corr in configs:
                flags = extra + ["--max-staleness", s, "--off-policy", corr]
                train(args.out, name_of(args.task, s, corr, seed), args.task, seed, args.steps, flags, workers=1)
    else:
        table(args.out, args.prefix)


def markdown(df, digits=3):
    """A DataFrame as a markdown table, floats to `digits` places (pandas' to_markdown needs tabulate)."""
    cell = lambda v: f"{v:.{digits}f}" if isinstance(v, float) else str(v)  # noqa: E731
    lines = ["| " + " | ".join(map(str, df.columns)) + " |", "|" + "---|" * len(df.columns)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in df.itertuples(index=False)]
    return "\n".join(lines)


def table(out, prefix=""):
    """Print docs/async.md's tables (markdown) from the CSVs in out, and draw <out>/staleness.png."""
    speed = []
    for path in sorted(glob.glob(os.path.join(out, f"{prefix}speed_*_seed*.csv"))):
        task, mode, seed = os.path.basename(path)[len(prefix + "speed_") : -len(".csv")].rsplit("_", 2)
        df = pd.read_csv(path)
        last = df.iloc[-1]
        n = (len(df) - 1) * int(df["step"].iloc[-1] > 0)
        wait = df["wait_s"].iloc[1:].sum() / last["time_s"] if "wait_s" in df else float("nan")
        speed.append(dict(task=task, mode=mode, seed=seed, steps=n, time_s=last["time_s"], learner_wait_share=wait))
    if speed:
        sp = pd.DataFrame(speed)
        sp["completions_per_s"] = sp["steps"] * BG / sp["time_s"]
        print(markdown(sp, 2))
        mean = sp.groupby(["task", "mode"])["completions_per_s"].agg(["mean", "std"]).reset_index()
        print(markdown(mean, 1))
    acc = []
    for path in sorted(glob.glob(os.path.join(out, f"{prefix}*_s[0-9]*_*_seed*.csv"))):
        stem = os.path.basename(path)[len(prefix) : -len(".csv")]
        task, s, corr, seed = stem.rsplit("_", 3)
        df = pd.read_csv(path)
        ev = df.dropna(subset=["eval_acc"])
        acc.append(dict(task=task, S=int(s[1:]), correction=corr, seed=seed, final=ev["eval_acc"].iloc[-1],
                        start=ev["eval_acc"].iloc[0], lag=df["policy_lag"].iloc[-1],
                        behav_kl=df["behav_kl"].iloc[1:].mean(), clip_frac=df["clip_frac"].iloc[1:].mean()))  # fmt: skip
    if not acc:
        return
    a = pd.DataFrame(acc)
    g = a.groupby(["task", "S", "correction"])
    summary = g["final"].agg(["mean", "std", "count"]).join(g[["behav_kl", "clip_frac"]].mean())
    summary["seeds"] = g["final"].apply(lambda x: ", ".join(f"{v:.3f}" for v in x))
    print(markdown(summary.reset_index(), 4))
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for corr, part in summary.reset_index().groupby("correction"):
        ax.errorbar(part["S"], part["mean"], yerr=part["std"].fillna(0), marker="o", capsize=3, label=corr)
    ax.set_xlabel("--max-staleness S (policy lag of every batch after the first S steps)")
    ax.set_ylabel("held-out accuracy at the end")
    ax.set_title(f"{', '.join(sorted(a['task'].unique()))}: mean of {a['seed'].nunique()} seeds, bars: ±1 std")
    ax.legend(title="--off-policy")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    png = os.path.join(out, f"{prefix}staleness.png")
    fig.savefig(png, dpi=120)
    print(f"wrote {png}")


if __name__ == "__main__":
    main()
