"""
One self-contained HTML page from the drivers' logs: the run's curves, its command, and the logged
rollouts token by token, coloured by the number the reader picks. Opens offline: no script, no CDN, no font.

    python train_grpo.py && python view.py logs/grpo.csv -o logs/grpo.html
    python view.py logs/grpo.csv logs/ppo.csv -o logs/grpo_vs_ppo.html     # the same steps side by side

Each CSV is read with the rollouts file beside it (<log stem>_rollouts.jsonl, utils/rollouts.py
describes it; without one the page has the curves only) and the run's summary JSON when it can be found
(beside the log as <log stem>_summary.json or <method>_summary.json, else in the run's --out-dir).
For each logged step the groups sit side by side, completions sorted by reward. A token's colour is one
of: the probability the sampling policy gave it, the true entropy of the distribution it was drawn
from, the k3 KL to the reference, or the advantage (GRPO: one per completion; PPO: one per token).
Grey struck tokens come after the end token (padding, outside the loss); dashed ones were written by
the environment (a tool), not sampled. Hover a token for its numbers. The colour picker is CSS (:has),
the steps are <details>: both work without JavaScript.
"""

import argparse
import html
import json
import math
import os

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
# curves: inline SVG, one small panel per column


def fmt(v):
    return "" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.4g}"


def panel(runs, col, w=330, h=190):
    """One column against step for every run that has it: raw (faint) and a rolling mean (pandas)."""
    pad_l, pad_r, pad_t, pad_b = 46, 8, 20, 22
    series = []
    for i, run in enumerate(runs):
        if col in run["df"].columns:
            s = run["df"].set_index("step")[col].dropna()
            if len(s):
                series.append((i, s))
    if not series:
        return ""
    lo = min(s.min() for _, s in series)
    hi = max(s.max() for _, s in series)
    x0 = min(s.index.min() for _, s in series)
    x1 = max(s.index.max() for _, s in series)
    hi, x1 = (hi if hi > lo else lo + 1), (x1 if x1 > x0 else x0 + 1)
    X = lambda x: pad_l + (x - x0) / (x1 - x0) * (w - pad_l - pad_r)
    Y = lambda y: pad_t + (hi - y) / (hi - lo) * (h - pad_t - pad_b)
    parts = [
        f'<svg class="c" width="{w}" height="{h}" viewBox="0 0 {w} {h}"><title>{html.escape(col)}</title>',
        f'<text x="{pad_l}" y="13" class="t">{html.escape(col)}</text>',
        f'<rect x="{pad_l}" y="{pad_t}" width="{w - pad_l - pad_r}" height="{h - pad_t - pad_b}" class="ax"/>',
        f'<text x="{pad_l - 3}" y="{pad_t + 8}" class="l">{fmt(hi)}</text>',
        f'<text x="{pad_l - 3}" y="{h - pad_b}" class="l">{fmt(lo)}</text>',
        f'<text x="{pad_l}" y="{h - 6}" class="b">{fmt(x0)}</text>',
        f'<text x="{w - pad_r}" y="{h - 6}" class="b e">step {fmt(x1)}</text>',
    ]
    for i, s in series:
        colour = COLOURS[i % len(COLOURS)]
        window = max(1, len(s) // 40)  # a trailing rolling mean over ~1/40 of the points
        smooth = s.rolling(window, min_periods=1).mean()
        step = max(1, len(s) // 300)  # at most ~300 points a line: the page stays small
        for ys, cls in [(s, "raw"), (smooth, "sm")] if window > 1 else [(s, "sm")]:
            ys = ys.iloc[::step] if len(ys) > 300 else ys
            pts = " ".join(f"{X(x):.1f},{Y(y):.1f}" for x, y in ys.items())
            if len(ys) == 1:
                parts.append(f'<circle cx="{X(ys.index[0]):.1f}" cy="{Y(ys.iloc[0]):.1f}" r="2.5" fill="{colour}"/>')
            else:
                tip = f"{runs[i]['label']}: {col}" + (f", rolling mean over {window} points" if cls == "sm" else "")
                parts.append(
                    f'<polyline class="{cls}" stroke="{colour}" points="{pts}"><title>{tip}</title></polyline>'
                )
    parts.append("</svg>")
    return "".join(parts)


def curves(runs):
    cols = [c for c in FIRST if any(c in r["df"].columns for r in runs)]
    for r in runs:
        cols += [c for c in r["df"].columns if c not in cols and c not in SKIP and r["df"][c].notna().any()]
    return "".join(panel(runs, c) for c in cols)


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
            vals.append((name, f"{v:.4g}"))
            if k == "logp":
                vals.append(("p", f"{math.exp(v):.3f}"))
    return " ".join(f"{k}={v}" for k, v in vals)


def show_piece(s):
    return s.replace("\n", "\u23ce").replace("\t", "\u21e5") or "\u2205"


def completion(c, scale):
    """One completion: reward, parts, advantage and its tokens."""
    n, spans, b = len(c["pieces"]), [], bins(c, scale)
    env, n_real = c.get("env_mask") or [0] * n, sum(c["mask"])
    t = 0
    while t < n:
        piece = html.escape(show_piece(c["pieces"][t]))
        if not c["mask"][t]:  # after the end token: one grey span for the rest
            rest = html.escape("".join(show_piece(p) for p in c["pieces"][t:]))
            spans.append(f'<span class="pad" title="after the end token: padding, outside the loss">{rest}</span>')
            break
        cls = " ".join(f"{q}{b[t][q]}" for q in QUANTITIES if q in b[t])
        if env[t]:
            cls = "env"
        if not c["truncated"] and t == n_real - 1:  # the end token
            cls += " eos"
        spans.append(f'<span class="{cls}" title="{html.escape(tip(c, t))}">{piece}</span>')
        t += 1
    a = c["advantage"]
    if isinstance(a, list):
        real = [v for v in a if v is not None]
        a_txt = f"A per token, mean {sum(real) / max(1, len(real)):+.3f}"
    else:
        a_txt = f"A {a:+.3f}"
    parts = " ".join(f"{k} {v:g}" for k, v in c["parts"].items())
    trunc = ' <span class="tr">truncated</span>' if c["truncated"] else ""
    return (
        f'<div class="cp"><div class="m">r {c["reward"]:+.3f} <span class="pt">({parts})</span> {a_txt}{trunc}</div>'
        f'<div class="tk">{"".join(spans)}</div></div>'
    )


def group(g, scale):
    comps = sorted(g["completions"], key=lambda c: -c["reward"])
    rs = [c["reward"] for c in comps]
    mean = sum(rs) / len(rs)
    head = f'<div class="gh"><span class="pr">{html.escape(g["prompt"])}</span> mean r {mean:+.3f}</div>'
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


def steps_html(runs, scale):
    steps = sorted({s for r in runs for s in (r["rollouts"] or {})})
    out = []
    for i, s in enumerate(steps):
        cols = []
        for r in runs:
            rec = (r["rollouts"] or {}).get(s)
            body = "".join(group(g, scale) for g in rec["groups"]) if rec else '<p class="no">not logged</p>'
            kind = f" ({rec['kind']})" if rec else ""
            cols.append(f'<div class="run"><h3>{html.escape(r["label"])}{kind}</h3><div class="gs">{body}</div></div>')
        grid = (
            f'<div class="runs" style="grid-template-columns:repeat({len(runs)},minmax(0,1fr))">{"".join(cols)}</div>'
        )
        opened = " open" if i == 0 else ""
        out.append(f'<details class="st"{opened}><summary>step {s}</summary>{grid}</details>')
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
svg.c{margin:0 6px 6px 0;border:1px solid #eee}
svg .t{font-size:12px;font-weight:600}svg .l{font-size:10px;text-anchor:end}svg .b{font-size:10px}svg .e{text-anchor:end}
svg .ax{fill:none;stroke:#ccc}svg polyline{fill:none;stroke-width:1.6}svg polyline.raw{stroke-width:.8;opacity:.35}
.runs{display:grid;gap:12px}.gs{display:flex;flex-wrap:wrap;gap:8px}
.g{border:1px solid #ccc;border-radius:4px;padding:4px 6px;min-width:180px}
.gh{font-size:12px;color:#555;border-bottom:1px solid #eee;margin-bottom:3px}.pr{font-family:monospace;color:#000}
.cp{margin:3px 0}.m{font-size:11px;color:#555}.pt{color:#888}.tr{color:#b00}
.tk{font-family:monospace;font-size:15px;white-space:pre-wrap;word-break:break-all}
.tk span{padding:0 1px;border-radius:2px}
.pad{color:#aaa;text-decoration:line-through}.env{border:1px dashed #2a7;color:#075;font-style:italic}
.eos{font-weight:700}
details.st{border-top:1px solid #ddd;padding:.3em 0}summary{cursor:pointer;font-weight:600}
pre{background:#f6f6f6;padding:.5em;overflow-x:auto;font-size:12px}
.key span{display:inline-block;width:18px;height:12px}
"""


def key_html():
    """The colour keys, each shown only while its quantity is picked."""
    ends = {"p": ("0", "1"), "H": ("0", "max"), "kl": ("&le;1e-4", "&ge;1"), "adv": ("&minus;", "+")}
    out = []
    for q in QUANTITIES:
        cells = "".join(f'<span class="{q}{i}"></span>' for i in range(NB))
        out.append(f'<span class="key k-{q}">{ends[q][0]} {cells} {ends[q][1]}</span>')
    return "".join(out)


def config_html(run):
    recs = list((run["rollouts"] or {}).values())
    bits = []
    commands = list(dict.fromkeys(r["command"] for r in recs if "command" in r))
    if commands:
        bits.append("<pre>" + html.escape("\n".join(commands)) + "</pre>")
    if recs and "config" in recs[-1]:
        cfg = "\n".join(f"{k}: {json.dumps(v)}" for k, v in sorted(recs[-1]["config"].items()))
        bits.append(f"<details><summary>flags</summary><pre>{html.escape(cfg)}</pre></details>")
    if run["summary"]:
        s = json.dumps(run["summary"], indent=1)
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
        f"<h2>Curves</h2><p>{legend} &mdash; faint: every step; solid: rolling mean (hover a line)</p>",
        curves(runs),
    ]
    if any_roll:
        radios = "".join(
            f'<label><input type="radio" name="q" id="q-{q}"{" checked" if q == "p" else ""}> {LABELS[q]}</label>'
            for q in QUANTITIES
        )
        parts += [
            "<h2>Rollouts</h2>",
            "<p>The first groups of each logged step, completions sorted by reward. GRPO gives every token of a "
            "completion the same advantage (the group's verdict on the whole completion); PPO gives each token its "
            "own, from the value model. Struck grey: after the end token (padding, outside the loss); dashed green: "
            "written by the environment (a tool), not sampled. Hover a token for its numbers.</p>",
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
