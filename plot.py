"""
Draw metric curves from the drivers' CSV logs into a labelled PNG.

    python plot.py --metric mean_r logs/grpo.csv logs/ppo.csv            # -> logs/mean_r.png
    python plot.py --metric eval_acc logs/grpo.csv -o logs/acc.png --smooth 5
    python plot.py --metric gold_r --x kl logs/rm_beta*.csv              # a metric against KL
    python plot.py --metric eval_acc,eval_len logs/chain_seed*.csv       # two panels side by side

One curve per CSV, labelled by the file name. CSVs named <name>_seed<k>.csv are one method run with
several seeds: they become one curve, the mean over seeds, with a band of +-1 standard deviation; the
legend says so ("<name>: mean of N seeds, band: +-1 std", N the number of CSVs averaged).
Empty and nan cells (eval_acc on steps without evaluation) are skipped, not drawn as zero. Read, smoothed
and averaged over seeds with pandas.
"""

import argparse
import os
import re
import sys

import matplotlib

matplotlib.use("Agg")  # no screen needed
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402

LABELS = {
    "mean_r": "mean reward",
    "kl": "KL(policy || reference)",
    "gold_r": "gold score (the rule)",
    "eval_ref_acc": "held-out accuracy of the reference",
    "entropy_norm": "entropy / log(classes)",
    "acc_sampled": "accuracy of the sampled predictions",
    "entropy": "entropy (nats / token)",
    "loss": "loss",
    "eval_acc": "held-out accuracy",
    "eval_r": "held-out reward",
    "clip_frac": "clip fraction",
    "grad_norm": "gradient norm (before clipping)",
    "len_mean": "completion length (tokens)",
    "eval_len": "held-out completion length (tokens, greedy)",
    "eval_think_frac": "held-out share of worked solutions",
    "think_frac": "share of worked solutions (samples)",
    "len_right": "length of right completions (tokens)",
    "len_wrong": "length of wrong completions (tokens)",
    "step": "step",
    "time_s": "wall time (s)",
}


class PlotError(Exception):
    pass


def load(path):
    """A metrics CSV as a DataFrame (empty and nan cells read as NaN)."""
    if not os.path.exists(path):
        raise PlotError(f"{path} not found")
    try:
        df = pd.read_csv(path)
    except pd.errors.EmptyDataError:
        raise PlotError(f"{path} is empty (no header or no rows)") from None
    if df.empty or "step" not in df.columns:
        raise PlotError(f"{path} is empty (no header or no rows)")
    return df


def series(df, metric, x):
    """`metric` indexed by `x`, on the rows where both are present."""
    return df[[x, metric]].dropna().set_index(x)[metric]


def smooth(y, n):
    """Trailing moving average over n points (the first points average what exists)."""
    return y.rolling(n, min_periods=1).mean() if n > 1 else y


def group_runs(paths):
    """{label: [paths]}: <name>_seed<k>.csv files share the label <name>."""
    groups = {}
    for p in paths:
        stem = os.path.splitext(os.path.basename(p))[0]
        groups.setdefault(re.sub(r"_seed\d+$", "", stem), []).append(p)
    return groups


def plot_curves(paths, metric, out=None, smooth_n=1, x="step", title=None, labels=None):
    """Draw `metric` (a column, or a list of columns: one panel each) against `x` for each run (or seed
    group) in paths; returns the PNG path."""
    metrics = [metric] if isinstance(metric, str) else list(metric)
    data = {p: load(p) for p in paths}
    for p, df in data.items():
        for m in (*metrics, x):
            if m not in df.columns:
                raise PlotError(f"unknown metric {m!r} in {p}; it has: {', '.join(df.columns)}")
    groups = group_runs(paths)
    if labels and len(labels) != len(groups):
        raise PlotError(f"{len(labels)} --labels for {len(groups)} curves")
    fig, axes = plt.subplots(1, len(metrics), figsize=(7 * len(metrics), 4.5), squeeze=False)
    for ax, m in zip(axes[0], metrics, strict=True):
        draw(ax, data, groups, m, x, smooth_n, labels, title if len(metrics) == 1 else None)
    if title and len(metrics) > 1:
        fig.suptitle(title)
    fig.tight_layout()
    if out is None:
        name = "_".join(metrics)
        out = os.path.join("logs", f"{name}.png" if x == "step" else f"{name}_vs_{x}.png")
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    fig.savefig(out, dpi=120)
    plt.close(fig)
    return out


def draw(ax, data, groups, metric, x, smooth_n, labels, title):
    """One panel: `metric` against `x`, a curve per group (seeds: mean and a +-1 std band)."""
    for i, (label, ps) in enumerate(groups.items()):
        name = labels[i] if labels else label
        runs = [series(data[p], metric, x) for p in ps]
        if x == "step" and len(runs) > 1:  # seeds: mean and +-1 std (population, ddof 0) over the common steps
            ys = pd.concat([smooth(r, smooth_n) for r in runs], axis=1, join="inner")  # (steps, seeds)
            mean, std = ys.mean(axis=1), ys.std(axis=1, ddof=0)
            n = ys.shape[1]  # the seeds that went into the mean: one column per CSV
            (line,) = ax.plot(ys.index, mean, label=f"{name}: mean of {n} seeds, band: ±1 std")
            ax.fill_between(ys.index, mean - std, mean + std, alpha=0.2, color=line.get_color())
        else:  # one run, or seeds against another x (their x values differ): one colour per group
            color = None
            for j, ys in enumerate(runs):
                seeds = f" ({len(runs)} seeds)" if len(runs) > 1 else ""
                kw = {
                    "label": name + seeds if j == 0 else None,
                    "color": color,
                    "alpha": 1.0 if len(runs) == 1 else 0.7,
                }
                (line,) = ax.plot(ys.index, smooth(ys, smooth_n), marker="." if x != "step" else None, **kw)
                color = line.get_color()
    ax.set_xlabel(LABELS.get(x, x))
    ax.set_ylabel(LABELS.get(metric, metric))
    sm = f", smoothed over {smooth_n} points" if smooth_n > 1 else ""
    ax.set_title(title or f"{LABELS.get(metric, metric)} vs {LABELS.get(x, x)}{sm}")
    ax.grid(alpha=0.3)
    ax.legend()


def main():
    parser = argparse.ArgumentParser(description="Plot a metric from one or more metrics CSVs into a PNG.")
    parser.add_argument("csv", nargs="+", help="metrics CSV files (<name>_seed<k>.csv are averaged)")
    parser.add_argument(
        "--metric", required=True, help="column(s) to draw, comma-separated, one panel each: mean_r, kl, eval_acc,..."
    )
    parser.add_argument("--x", default="step", help="column for the x axis (step, time_s, kl, ...)")
    parser.add_argument("-o", "--out", default=None, help="PNG path (default logs/<metric>[_<metric>...].png)")
    parser.add_argument("--smooth", type=int, default=1, help="moving-average window in points (1 = none)")
    parser.add_argument("--title", default=None, help="figure title")
    parser.add_argument("--labels", nargs="*", default=None, help="legend labels, one per curve")
    args = parser.parse_args()
    if args.smooth < 1:
        parser.error("--smooth must be >= 1")
    try:
        out = plot_curves(args.csv, args.metric.split(","), args.out, args.smooth, args.x, args.title, args.labels)
    except PlotError as e:
        print(f"plot.py: error: {e}", file=sys.stderr)
        sys.exit(2)
    print(f"saved {out}")


if __name__ == "__main__":
    main()
