"""
One self-contained HTML page from the drivers' logs: the run's curves, its command, and the logged
rollouts token by token, coloured by the number the reader picks. Opens offline: no script, no CDN, no font.

    python train_grpo.py && python view.py logs/grpo.csv -o logs/grpo.html
    python view.py logs/grpo.csv logs/ppo.csv -o logs/grpo_vs_ppo.html     # the same steps side by side

Each CSV is read with the rollouts file beside it (<log stem>_rollouts.jsonl, utils/rollouts.py
describes it; without one the page has the curves only) and the run's summary JSON when it can be found
(beside the log as <log stem>_summary.json or <method>_summary.json, else in the run's --out-dir).
The curves are grouped under headings, each panel with round ticks and a caption. For each logged step
one box per prompt holds that prompt's group from every run (matched by prompt, not by position in the
files), completions sorted by reward. A token's colour is one of: the probability the sampling policy
gave it, the true entropy of the distribution it was drawn from, the k3 KL to the reference, or the
advantage (GRPO: one per completion; PPO: one per token). The positions after the end token (padding,
outside the loss) are not drawn; dashed tokens were written by the environment (a tool), not sampled.
Hover a token for its numbers. Every number is rounded to 4 significant digits. The colour picker is CSS
(:has), the steps are <details>: both work without JavaScript.
"""

import argparse
import html
import json
import math
import os
import re

import pandas as pd

from utils.common import fail

# curves drawn first when the CSV has them (then every other numeric column)
FIRST = ["mean_r", "eval_acc", "eval_r", "kl", "len_mean", "entropy", "clip_frac", "grad_norm", "loss"]
SKIP = {"step", "time_s", "tokens_per_s", "skipped", "lr"}
COLOURS = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b"]
NB = 10  # colour bins per quantity
# token colourings: (key, label, bin of a value, colour of bin i)
QUANTITIES = ["p", "H", "kl", "adv"]
LABELS = {
    "p": "probability under the sampling policy",
    "H": "entropy of the next-token distribution",
    "kl": "k3 KL to the reference",
    "adv": "advantage",
}
# one line per colouring: what the colour says and how to read it
MODE_CAPTIONS = {
    "p": "p = exp(logp) the sampling policy gave the token: dark orange is a surprising (unlikely) token, white a near-certain one.",
    "H": "Entropy of the distribution the token was drawn from (0 to the page's largest): purple where the policy hesitated.",
    "kl": "Per-token k3 KL to the reference, log scale 1e-4 to 1: purple where RL moved the policy away from the SFT model.",
    "adv": "Advantage (red positive, blue negative; the scale ends at the page's 98th percentile): GRPO gives a "
    "completion one value, so it is one colour; PPO gives each token its own.",
}


class ViewError(Exception):
    pass


# -----------------------------------------------------------------------------
# reading


def read_log(path):
    """The metrics CSV as a DataFrame sorted by step; ViewError (one line) when missing or malformed."""
    if not os.path.exists(path):
        raise ViewError(f"{path} not found")
    try:
        df = pd.read_csv(path)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as e:
        raise ViewError(f"{path} is not a metrics CSV ({str(e).strip().splitlines()[-1][:80]})") from None
    if "step" not in df.columns or df.empty:
        raise ViewError(f"{path} is not a metrics CSV (no 'step' column or no rows)")
    df = df.apply(pd.to_numeric, errors="coerce")  # a stray text cell reads as empty
    if df["step"].isna().any():
        raise ViewError(f"{path} is not a metrics CSV (a row without a step)")
    return df.sort_values("step").reset_index(drop=True)


def read_rollouts(path):
    """{step: record} of a rollouts file, None when there is none; ViewError on a malformed line."""
    if not os.path.exists(path):
        return None
    out = {}
    with open(path) as f:
        for i, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
                for g in rec["groups"]:
                    for c in g["completions"]:
                        assert len(c["pieces"]) == len(c["mask"]) and "reward" in c and "advantage" in c
                out[int(rec["step"])] = rec
            except (ValueError, KeyError, TypeError, AssertionError):
                raise ViewError(f"{path}: line {i} is not a rollouts record (utils/rollouts.py)") from None
    return out


def find_summary(csv_path, rollouts):
    """The run's summary JSON (train_grpo.py / train_ppo.py write <out-dir>/<method>_summary.json): beside
    the log, else in the --out-dir of the run's last invocation when it is a run of as many steps (another
    run may have written there since)."""
    stem, d = os.path.splitext(csv_path)[0], os.path.dirname(csv_path)
    rec = rollouts[max(rollouts)] if rollouts else {}
    kind, cfg = rec.get("kind", "grpo"), rec.get("config", {})
    tries = [stem + "_summary.json", os.path.join(d, f"{kind}_summary.json")]
    tries += [os.path.join(cfg["out_dir"], f"{kind}_summary.json")] if cfg.get("out_dir") else []
    for i, p in enumerate(tries):
        if os.path.exists(p):
            try:
                with open(p) as f:
                    summary = json.load(f)
            except ValueError:
                raise ViewError(f"{p} is not JSON") from None
            if i < 2 or summary.get("steps") == cfg.get("steps"):
                return p, summary
    return None, None


def load_run(csv_path):
    roll = read_rollouts(os.path.splitext(csv_path)[0] + "_rollouts.jsonl")
    summary_path, summary = find_summary(csv_path, roll)
    label = os.path.splitext(os.path.basename(csv_path))[0]
    return {"label": label, "path": csv_path, "df": read_log(csv_path), "rollouts": roll, "summary": summary,
            "summary_path": summary_path}  # fmt: skip


# -----------------------------------------------------------------------------
# curves: inline SVG, one small panel per column, grouped under headings, each with a caption

SIG = 4  # significant digits of every number the page prints (the CSV holds 6; the file 6 too)
CHAR_W = 6.5  # px a character of a 10 px axis label takes at most (digits are 0.64 em in DejaVu Sans)


def num(v, sig=SIG):
    """v rounded to sig significant digits, without float noise (0.30000000000000004 -> 0.3)."""
    return "" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.{sig}g}"


def signed(v, decimals=3):
    """+0.123 / -0.123, and +0.000 (not -0.000) for a value that rounds to zero."""
    s = f"{v:+.{decimals}f}"
    return "+" + s[1:] if float(s) == 0 else s


def rounded(obj, sig=SIG):
    """A JSON value with every float rounded to sig significant digits (the summary, the flags)."""
    if isinstance(obj, float) and math.isfinite(obj):
        return float(f"{obj:.{sig}g}")
    if isinstance(obj, dict):
        return {k: rounded(v, sig) for k, v in obj.items()}
    if isinstance(obj, list):
        return [rounded(v, sig) for v in obj]
    return obj


def ticks(lo, hi, n=5, integer=False, extend=True):
    """About n round ticks (1, 2, 2.5 or 5 x 10^k apart) for data in [lo, hi]: (ticks, their labels). With
    extend the axis runs from the first tick at or below lo to the first at or above hi (both ends carry a
    number), else the ticks are those inside [lo, hi] (at least n / 2 of them)."""
    span = hi - lo if hi > lo else (abs(lo) or 1.0)
    raw = span / n
    mag = 10 ** math.floor(math.log10(raw))
    step = next(m * mag for m in ((1, 2, 5, 10) if integer else (1, 2, 2.5, 5, 10)) if m * mag >= raw)
    step = max(1, round(step)) if integer else step
    if extend:
        first, last = math.floor(lo / step + 1e-9), math.ceil(hi / step - 1e-9)
        last = max(last, first + 1)
    else:
        first, last = math.ceil(lo / step - 1e-9), math.floor(hi / step + 1e-9)
    vals = [float(f"{i * step:.12g}") for i in range(first, last + 1)]  # 3 * 0.1 -> 0.3, not 0.30000000000000004
    # decimals enough to tell the ticks apart (2.5 needs one more), never float noise like 0.30000000000000004
    dec = max(0, -math.floor(math.log10(step) + 1e-9)) + (1 if round(step / mag, 1) == 2.5 and step < 10 else 0)
    if max(abs(vals[0]), abs(vals[-1])) >= 1e5 or dec > 5:
        labels = [f"{v:.3g}" for v in vals]
    else:
        labels = [f"{v:.{dec}f}" for v in vals]
    labels = [s[1:] if re.fullmatch(r"-0\.?0*", s) else s for s in labels]  # -0.00 -> 0.00
    return vals, labels


# The panels' headings, in page order: (heading, the columns it holds, or a test of a column's name)
SECTIONS = [
    ("Reward and accuracy", lambda c: c in ("mean_r", "std_r", "gold_r", "eval_r") or c.startswith(("r_", "eval_acc"))),
    ("How far and how fast the policy moves", lambda c: c in ("kl", "entropy", "clip_frac", "approx_kl", "frac_zero_std", "kept_groups")),
    ("Length and shape of the completions", lambda c: c.startswith(("len_", "eval_len", "think_frac", "eval_think"))),
    ("Tool use", lambda c: c.startswith(("tool_", "env_frac", "eval_tool"))),
    ("Optimisation (and PPO's value model)", lambda c: c in ("loss", "pg_loss", "grad_norm", "value_loss", "explained_var")),
    ("Other columns", lambda c: True),
]  # fmt: skip

# One line per column: what the panel shows and how to read it (utils/metrics.py defines each column)
CAPTIONS = {
    "mean_r": "Mean total reward of the step's sampled completions: the number RL pushes up.",
    "std_r": "Std of the reward within the step's samples: near 0 means the groups agree and GRPO's advantages vanish.",
    "gold_r": "Gold score (the rule the reward model imitates) of the samples: falling while mean_r rises is over-optimisation.",
    "eval_r": "Held-out mean score of the task's rule on evaluation steps (greedy): the honest version of mean_r.",
    "eval_acc": "Held-out exact-match accuracy on evaluation steps (greedy); step 0 is the SFT policy.",
    "kl": "Mean per-token k3 KL to the frozen reference (SFT policy): how far RL has moved the policy; flat is stable.",
    "entropy": "Mean true entropy (nats) of the next-token distribution: falling means the policy grows certain.",
    "clip_frac": "Share of tokens where the PPO clip was active (no gradient); 0 with GRPO's default mu = 1.",
    "frac_zero_std": "Share of groups whose rewards are all equal: their GRPO advantage is 0, they teach nothing.",
    "kept_groups": "Groups with non-zero advantage that were trained on (GRPO); falls as groups all get it right.",
    "loss": "The minimised loss: its value says little in RL (advantages are centred), watch its spikes.",
    "grad_norm": "Gradient 2-norm before clipping: spikes mark unstable steps.",
    "len_mean": "Mean number of completion tokens (end token included) per sample.",
    "len_right": "Mean length (characters) of the step's right completions.",
    "len_wrong": "Mean length (characters) of the step's wrong completions.",
    "think_frac": "Share of samples that open a scratchpad ('<'): worked solutions.",
    "eval_len": "Held-out mean completion length (characters, greedy) on evaluation steps.",
    "eval_think_frac": "Held-out share of worked solutions (greedy) on evaluation steps.",
    "tool_frac": "Share of samples that called the tool at least once.",
    "tool_calls": "Mean number of tool calls per sample.",
    "env_frac": "Share of completion tokens the environment wrote (the tool's replies), not sampled.",
    "value_loss": "PPO: the value model's clipped loss; it should fall as the value model learns the returns.",
    "explained_var": "PPO: how much of the returns' variance the value model predicted (1 perfect, 0 none, < 0 worse).",
    "approx_kl": "PPO: k3 KL between the rollout policy and the updated one: a step size; large means big updates.",
    "pg_loss": "PPO: the clipped surrogate (policy) part of the loss alone.",
}


# the held-out accuracy among one kind of completion (eval_acc_<kind>, tasks/chain.py)
KINDS = {
    "think": "worked (scratchpad) completions",
    "direct": "direct answers (no scratchpad)",
    "tool": "completions that called the calculator",
    "head": "worked completions that did not call the calculator",
}


def caption(col):
    """The panel's caption: what the column is and how to read it."""
    if col in CAPTIONS:
        return CAPTIONS[col]
    if col.startswith("r_"):
        return f"Mean score of the reward function '{col[2:]}' (before its weight) over the step's samples."
    if col.endswith("_sampled"):
        return f"As {col.removesuffix('_sampled')}, but sampled at temperature 1 (fixed random numbers), not greedy."
    if col.startswith("eval_acc_") and col[9:] in KINDS:
        return f"Held-out greedy accuracy among the {KINDS[col[9:]]}; no point where there is none."
    if col == "eval_tool_frac":
        return "Held-out share of completions (greedy) that called the calculator."
    return f"The CSV's {col} column against step (utils/metrics.py or the task defines it)."


def panel(runs, col, w=330, h=200):
    """One column against step for every run that has it: raw (faint) and a rolling mean (pandas), with
    round ticks on both axes and a caption."""
    series = []
    for i, run in enumerate(runs):
        if col in run["df"].columns:
            s = run["df"].set_index("step")[col].dropna()
            if len(s):
                series.append((i, s))
    if not series:
        return ""
    ys, ylab = ticks(min(s.min() for _, s in series), max(s.max() for _, s in series))
    x0 = min(s.index.min() for _, s in series)
    x1 = max(x0 + 1, max(s.index.max() for _, s in series))
    xs, xlab = ticks(x0, x1, 6, integer=True, extend=False)  # the x axis spans the steps logged, no more
    lo, hi = ys[0], ys[-1]
    # room for the longest y label and half an x label at either end: CHAR_W px a character at 10 px
    pad_l = max(30, round(CHAR_W * max(len(s) for s in ylab)) + 10, round(CHAR_W / 2 * len(xlab[0])) + 4)
    pad_r, pad_t, pad_b = max(10, round(CHAR_W / 2 * len(xlab[-1])) + 4), 22, 30
    X = lambda x: pad_l + (x - x0) / (x1 - x0) * (w - pad_l - pad_r)
    Y = lambda y: pad_t + (hi - y) / (hi - lo) * (h - pad_t - pad_b)
    parts = [
        f'<svg class="c" width="{w}" height="{h}" viewBox="0 0 {w} {h}"><title>{html.escape(col)}</title>',
        f'<text x="{pad_l}" y="14" class="t">{html.escape(col)}</text>',
        f'<rect x="{pad_l}" y="{pad_t}" width="{w - pad_l - pad_r}" height="{h - pad_t - pad_b}" class="ax"/>',
    ]
    for v, s in zip(ys, ylab, strict=True):
        parts.append(f'<line x1="{pad_l}" x2="{w - pad_r}" y1="{Y(v):.1f}" y2="{Y(v):.1f}" class="gr"/>')
        parts.append(f'<text x="{pad_l - 4}" y="{Y(v) + 3.5:.1f}" class="l">{s}</text>')
    for v, s in zip(xs, xlab, strict=True):
        parts.append(f'<line x1="{X(v):.1f}" x2="{X(v):.1f}" y1="{pad_t}" y2="{h - pad_b}" class="gr"/>')
        parts.append(f'<text x="{X(v):.1f}" y="{h - pad_b + 12}" class="b">{s}</text>')
    parts.append(f'<text x="{(pad_l + w - pad_r) / 2:.0f}" y="{h - 4}" class="b">step</text>')
    for i, s in series:
        colour = COLOURS[i % len(COLOURS)]
        window = max(1, len(s) // 40)  # a trailing rolling mean over ~1/40 of the points
        smooth = s.rolling(window, min_periods=1).mean()
        step = max(1, len(s) // 300)  # at most ~300 points a line: the page stays small
        for ys_, cls in [(s, "raw"), (smooth, "sm")] if window > 1 else [(s, "sm")]:
            ys_ = ys_.iloc[::step] if len(ys_) > 300 else ys_
            pts = " ".join(f"{X(x):.1f},{Y(y):.1f}" for x, y in ys_.items())
            if len(ys_) == 1:
                x, y = ys_.index[0], ys_.iloc[0]
                parts.append(
                    f'<circle cx="{X(x):.1f}" cy="{Y(y):.1f}" r="2.5" fill="{colour}">'
                    f"<title>{html.escape(runs[i]['label'])}: {col} {num(y)} at step {num(x)}</title></circle>"
                )
            else:
                tip = f"{runs[i]['label']}: {col}" + (f", rolling mean over {window} points" if cls == "sm" else "")
                parts.append(
                    f'<polyline class="{cls}" stroke="{colour}" points="{pts}"><title>{tip}</title></polyline>'
                )
    parts.append("</svg>")
    return f'<figure class="pn">{"".join(parts)}<figcaption>{html.escape(caption(col))}</figcaption></figure>'


def curves(runs):
    """The panels, grouped under the SECTIONS headings (columns the CSVs have, FIRST ones first)."""
    cols = [c for c in FIRST if any(c in r["df"].columns for r in runs)]
    for r in runs:
        cols += [c for c in r["df"].columns if c not in cols and c not in SKIP and r["df"][c].notna().any()]
    out, done = [], set()
    for heading, holds in SECTIONS:
        mine = [c for c in cols if c not in done and holds(c)]
        done.update(mine)
        figs = "".join(panel(runs, c) for c in mine)
        if figs:
            out.append(f'<h3 class="sec">{heading}</h3><div class="pns">{figs}</div>')
    return "".join(out)


# -----------------------------------------------------------------------------
# tokens


def bins(c, scale):
    """The colour bin (0..NB-1) of each token for each quantity, or None where it has no value."""
    n = len(c["pieces"])
    adv = c["advantage"] if isinstance(c["advantage"], list) else [c["advantage"]] * n
    lp, H, kl = (c.get(k) or [None] * n for k in ("logp", "entropy", "kl"))
    clamp = lambda v: max(0, min(NB - 1, int(v)))
    out = []
    for t in range(n):
        b = {}
        if lp[t] is not None:
            b["p"] = clamp(math.exp(lp[t]) * NB)  # probability in tenths
        if H[t] is not None:
            b["H"] = clamp(H[t] / scale["H"] * NB)
        if kl[t] is not None:  # log scale: 1e-4 .. 1 over the bins
            b["kl"] = 0 if kl[t] <= 1e-4 else clamp((math.log10(kl[t]) + 4) / 4 * (NB - 1) + 1)
        if adv[t] is not None:
            b["adv"] = clamp((adv[t] / scale["adv"] + 1) / 2 * NB)  # -scale .. +scale
        out.append(b)
    return out


def tip(c, t):
    """The hover text of token t: every per-token number the file has for it."""
    vals = []
    for k, name in (("logp", "logp"), ("entropy", "H"), ("ref_logp", "ref"), ("kl", "k3"),
                    ("advantage", "A"), ("adv_gae", "A_gae"), ("value", "V")):  # fmt: skip
        v = c.get(k)
        if not isinstance(v, list):  # GRPO's advantage is the completion's, in its header
            continue
        v = v[t]
        if v is not None:
            vals.append((name, num(v)))
            if k == "logp":
                vals.append(("p", f"{math.exp(v):.3f}"))
    return " ".join(f"{k}={v}" for k, v in vals)


def show_piece(s):
    return s.replace("\n", "\u23ce").replace("\t", "\u21e5") or "\u2205"


def completion(c, scale):
    """One completion: reward, parts, advantage and its tokens. The positions after the end token (mask 0:
    padding, outside the loss) are not drawn, only counted in the header."""
    n, spans, b = len(c["pieces"]), [], bins(c, scale)
    env, n_real = c.get("env_mask") or [0] * n, sum(c["mask"])
    for t in range(n):
        if not c["mask"][t]:  # after the end token: padding, never drawn
            continue
        piece = html.escape(show_piece(c["pieces"][t]))
        cls = " ".join(f"{q}{b[t][q]}" for q in QUANTITIES if q in b[t])
        if env[t]:
            cls = "env"
        if not c["truncated"] and t == n_real - 1:  # the end token
            cls += " eos"
        spans.append(f'<span class="{cls}" title="{html.escape(tip(c, t))}">{piece}</span>')
    a = c["advantage"]
    if isinstance(a, list):
        real = [v for v in a if v is not None]
        a_txt = f"A per token, mean {signed(sum(real) / max(1, len(real)))}"
    else:
        a_txt = f"A {signed(a)}"
    parts = " ".join(f"{k} {num(v)}" for k, v in c["parts"].items())
    trunc = ' <span class="tr">truncated</span>' if c["truncated"] else ""
    return (
        f'<div class="cp"><div class="m">r {signed(c["reward"])} <span class="pt">({parts})</span> {a_txt}{trunc}</div>'
        f'<div class="tk">{"".join(spans)}</div></div>'
    )


def group(g, scale, who=""):
    """One group: its prompt, the run it comes from (who) and its mean reward, completions sorted by reward."""
    comps = sorted(g["completions"], key=lambda c: -c["reward"])
    rs = [c["reward"] for c in comps]
    mean = sum(rs) / len(rs)
    run = f'<span class="who">{html.escape(who)}</span> ' if who else ""
    head = f'<div class="gh">{run}<span class="pr">{html.escape(g["prompt"])}</span> mean r {signed(mean)}</div>'
    return f'<div class="g">{head}{"".join(completion(c, scale) for c in comps)}</div>'


def scales(runs):
    """Page-wide colour scales: entropy up to the largest seen, advantage up to its 98th percentile."""
    H, A = [1e-6], [1e-6]
    for run in runs:
        for rec in (run["rollouts"] or {}).values():
            for g in rec["groups"]:
                for c in g["completions"]:
                    H += [v for v in c.get("entropy") or [] if v is not None]
                    a = c["advantage"] if isinstance(c["advantage"], list) else [c["advantage"]]
                    A += [abs(v) for v in a if v is not None]
    A.sort()
    return {"H": max(H), "adv": max(A[int(0.98 * (len(A) - 1))], 1e-3)}


def rows_by_prompt(recs):
    """[(prompt, [group of run 0 or None, group of run 1 or None, ...])]: the runs' groups matched by prompt
    (the k-th group of a prompt with the k-th of the same prompt elsewhere), in the order the prompts first
    appear, whatever order each file lists them in."""
    rows, where = [], {}
    for i, rec in enumerate(recs):
        seen = {}
        for g in rec["groups"] if rec else []:
            key = (g["prompt"], seen.get(g["prompt"], 0))  # the same prompt twice in a batch: matched in turn
            seen[g["prompt"]] = key[1] + 1
            if key not in where:
                where[key] = len(rows)
                rows.append((g["prompt"], [None] * len(recs)))
            rows[where[key]][1][i] = g
    return rows


def steps_html(runs, scale):
    """Each logged step as a <details>: one box per prompt, holding that prompt's group from every run side
    by side (run 0 on the left), the boxes wrapped across the page."""
    steps = sorted({s for r in runs for s in (r["rollouts"] or {})})
    out = []
    for i, s in enumerate(steps):
        recs = [(r["rollouts"] or {}).get(s) for r in runs]
        who = [f"{r['label']} ({rec['kind']})" if rec else r["label"] for r, rec in zip(runs, recs, strict=True)]
        boxes = []
        for prompt, gs in rows_by_prompt(recs):
            cells = [
                group(g, scale, who[j] if len(runs) > 1 else "")
                if g
                else f'<div class="g none"><div class="gh"><span class="who">{html.escape(who[j])}</span> '
                f"{'no group for this prompt' if recs[j] else 'step not logged'}</div></div>"
                for j, g in enumerate(gs)
            ]
            boxes.append(f'<div class="row" data-prompt="{html.escape(prompt)}">{"".join(cells)}</div>')
        opened = " open" if i == 0 else ""
        out.append(
            f'<details class="st"{opened}><summary>step {s}</summary><div class="rows">{"".join(boxes)}</div></details>'
        )
    return "".join(out)


# -----------------------------------------------------------------------------
# the page


def colour_css():
    """body:has(#q-X:checked) .X<i> {background}: the picker without JavaScript."""
    rules = []
    for q in QUANTITIES:
        for i in range(NB):
            f = i / (NB - 1)
            if q == "adv":  # diverging: blue (negative) .. white .. red (positive)
                d = abs(2 * f - 1)
                rgb = (
                    (255, int(255 - 170 * d), int(255 - 170 * d))
                    if f > 0.5
                    else (int(255 - 170 * d), int(255 - 120 * d), 255)
                )
            elif q == "p":  # low probability is the surprising token: dark orange .. white
                rgb = (255, int(140 + 115 * f), int(40 + 215 * f))
            else:  # 0 white .. high purple
                rgb = (int(255 - 110 * f), int(255 - 170 * f), int(255 - 60 * f))
            rules.append(f"body:has(#q-{q}:checked) .{q}{i}{{background:rgb{rgb}}}")
    return "\n".join(rules)


CSS = """
body{font:14px/1.4 system-ui,sans-serif;margin:0 1em 3em;color:#222}
h1{font-size:1.4em}h2{font-size:1.15em;margin-top:1.5em}h3{font-size:1em;margin:.3em 0}
.bar{position:sticky;top:0;background:#fff;border-bottom:1px solid #ccc;padding:.4em 0;z-index:1}
.bar label{margin-right:1em}
.pns{display:flex;flex-wrap:wrap;gap:6px}figure.pn{margin:0;width:332px}
figure.pn figcaption{font-size:11px;color:#555;padding:0 4px 6px}
svg.c{border:1px solid #eee;overflow:visible}
svg .t{font-size:12px;font-weight:600}svg .l{font-size:10px;text-anchor:end}svg .b{font-size:10px;text-anchor:middle}
svg .ax{fill:none;stroke:#ccc}svg .gr{stroke:#eee}svg polyline{fill:none;stroke-width:1.6}
svg polyline.raw{stroke-width:.8;opacity:.35}
h3.sec{margin:1em 0 .3em;color:#444}
.rows{display:flex;flex-wrap:wrap;gap:10px;align-items:flex-start}
.row{display:flex;gap:4px;align-items:stretch;padding:3px;border-radius:5px;background:#f3f3f3}
.g{border:1px solid #ccc;border-radius:4px;padding:4px 6px;min-width:200px;background:#fff}
.g.none{color:#999;font-style:italic}
.gh{font-size:12px;color:#555;border-bottom:1px solid #eee;margin-bottom:3px}.pr{font-family:monospace;color:#000}
.who{font-weight:600;color:#333}.cap{font-size:12px;color:#444}
.cp{margin:3px 0}.m{font-size:11px;color:#555}.pt{color:#888}.tr{color:#b00}
.tk{font-family:monospace;font-size:15px;white-space:pre-wrap;word-break:break-all}
.tk span{padding:0 1px;border-radius:2px}
.env{border:1px dashed #2a7;color:#075;font-style:italic}
.eos{font-weight:700}
details.st{border-top:1px solid #ddd;padding:.3em 0}summary{cursor:pointer;font-weight:600}
pre{background:#f6f6f6;padding:.5em;overflow-x:auto;font-size:12px}
.key span{display:inline-block;width:18px;height:12px}.key .cap{display:inline;width:auto;height:auto;margin-left:.6em}
"""


def key_html():
    """The colour keys, each shown only while its quantity is picked."""
    ends = {"p": ("0", "1"), "H": ("0", "max"), "kl": ("&le;1e-4", "&ge;1"), "adv": ("&minus;", "+")}
    out = []
    for q in QUANTITIES:
        cells = "".join(f'<span class="{q}{i}"></span>' for i in range(NB))
        cap = f' <span class="cap">{html.escape(MODE_CAPTIONS[q])}</span>'
        out.append(f'<span class="key k-{q}">{ends[q][0]} {cells} {ends[q][1]}{cap}</span>')
    return "".join(out)


def config_html(run):
    recs = list((run["rollouts"] or {}).values())
    bits = []
    commands = list(dict.fromkeys(r["command"] for r in recs if "command" in r))
    if commands:
        bits.append('<pre class="cmd">' + html.escape("\n".join(commands)) + "</pre>")
    if recs and "config" in recs[-1]:
        cfg = "\n".join(f"{k}: {json.dumps(rounded(v))}" for k, v in sorted(recs[-1]["config"].items()))
        bits.append(f"<details><summary>flags</summary><pre>{html.escape(cfg)}</pre></details>")
    if run["summary"]:
        s = json.dumps(rounded(run["summary"]), indent=1)
        bits.append(
            f"<details><summary>summary ({html.escape(run['summary_path'])})</summary><pre>{html.escape(s)}</pre></details>"
        )
    body = "".join(bits) or "<p>no rollouts file and no summary found beside the log: curves only</p>"
    return f"<h3>{html.escape(run['label'])} <small>({html.escape(run['path'])})</small></h3>{body}"


def page(runs):
    scale = scales(runs)
    any_roll = any(r["rollouts"] for r in runs)
    legend = " ".join(
        f'<span style="color:{COLOURS[i % len(COLOURS)]}">&#9632; {html.escape(r["label"])}</span>'
        for i, r in enumerate(runs)
    )
    key_css = "\n".join(f"body:not(:has(#q-{q}:checked)) .k-{q}{{display:none}}" for q in QUANTITIES)
    parts = [
        "<!DOCTYPE html><html><head><meta charset='utf-8'>",
        f"<title>{html.escape(' vs '.join(r['label'] for r in runs))}</title>",
        f"<style>{CSS}{colour_css()}\n{key_css}</style></head><body>",
        f"<h1>{html.escape(' | '.join(r['label'] for r in runs))}</h1>",
        "<h2>Runs</h2>",
        *[config_html(r) for r in runs],
        f"<h2>Curves</h2><p>{legend} &mdash; faint: every step; solid: rolling mean (hover a line). Every number "
        f"on the page is rounded to {SIG} significant digits (rewards and advantages to 3 decimals).</p>",
        curves(runs),
    ]
    if any_roll:
        radios = "".join(
            f'<label><input type="radio" name="q" id="q-{q}"{" checked" if q == "p" else ""}> {LABELS[q]}</label>'
            for q in QUANTITIES
        )
        parts += [
            "<h2>Rollouts</h2>",
            "<p>The first groups of each logged step, completions sorted by reward. Each grey box is one prompt: "
            "with several runs it holds that prompt's group from every run, left to right in the order of the "
            "command line, matched by prompt. GRPO gives every token of a completion the same advantage (the "
            "group's verdict on the whole completion); PPO gives each token its own, from the value model. "
            "Padding after the end token (outside the loss) is not drawn; the bold last token is the end token; "
            "dashed green: written by the environment (a tool), not sampled. Hover a token for its numbers.</p>",
            f'<div class="bar">colour by: {radios}<br>{key_html()}</div>',
            steps_html(runs, scale),
        ]
    parts.append("</body></html>")
    return "".join(parts)


def write_page(csv_paths, out_path):
    """Read the logs (raises ViewError, one line, on bad input) and write their page; returns out_path."""
    runs = [load_run(p) for p in csv_paths]
    text = page(runs)
    os.makedirs(os.path.dirname(os.path.abspath(out_path)), exist_ok=True)
    with open(out_path, "w", encoding="utf-8") as f:
        f.write(text)
    return out_path


def main():
    parser = argparse.ArgumentParser(description="One offline HTML page from metrics CSVs and their rollouts files.")
    parser.add_argument("csv", nargs="+", help="metrics CSVs (train_grpo.py / train_ppo.py --log); side by side")
    parser.add_argument("-o", "--out", default=None, help="HTML path (default: the first CSV's path with .html)")
    args = parser.parse_args()
    out = args.out or os.path.splitext(args.csv[0])[0] + ".html"
    try:
        write_page(args.csv, out)
    except ViewError as e:
        fail(str(e))
    print(f"wrote {out} ({os.path.getsize(out) / 1e6:.2f} MB)")


if __name__ == "__main__":
    main()
