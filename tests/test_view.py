"""The rollouts file (utils/rollouts.py) and its page (view.py): the numbers are the loss's, the page holds
them all and nothing external, --resume appends as the CSV does, bad input is one line; plot.py and
metrics.read_csv through pandas."""

import html
import json
import math
import re
import shutil
from html.parser import HTMLParser

import pandas as pd
import pytest
import torch
import torch.nn.functional as F
from conftest import TINY, run

import view
from grpo import group_advantages
from model import GPT, CharTokenizer, GPTConfig
from utils.ckpt import load_checkpoint
from utils.metrics import read_csv

# B*G = 16 = --rollout-groups 4 x G 4: the rollouts file holds the whole batch, so its token means are the CSV's
SMALL = ["--batch-size", 4, "--group-size", 4, "--eval-every", 2, "--no-progress", "--rollout-groups", 4, *TINY]


def lines(path):
    return [json.loads(x) for x in open(path)]


def completions(rec):
    return [c for g in rec["groups"] for c in g["completions"]]


@pytest.fixture(scope="module")
def runs(tiny_sft, tmp_path_factory):
    """An uninterrupted 3-step GRPO run (a), the same run killed by a NaN at step 3 after its step-2
    checkpoint and resumed (b), and a 3-step PPO run, each from the tiny SFT policy."""
    out = {}
    for name in ("a", "b", "ppo"):
        d = tmp_path_factory.mktemp(name)
        shutil.copy(tiny_sft / "policy.pth", d / "policy.pth")
        out[name] = d
    a, b = out["a"], out["b"]
    p = run("train_grpo.py", "--steps", 3, "--out-dir", a, "--log", a / "g.csv", *SMALL)
    assert p.returncode == 0, p.stderr
    common = ["--steps", 3, "--out-dir", b, "--log", b / "g.csv", "--ckpt-every", 2, *SMALL]
    p = run("train_grpo.py", *common, "--debug-nan-steps", 3, "--max-bad-steps", 1)
    assert p.returncode == 1 and "stopping" in p.stderr, p.stderr
    assert [r["step"] for r in lines(b / "g_rollouts.jsonl")] == [1, 2, 3]  # step 3 was logged, then it stopped
    shutil.copy(b / "grpo_ckpt.pt", b / "step2.pt")  # pi_old of step 3
    p = run("train_grpo.py", *common, "--resume")
    assert p.returncode == 0, p.stderr
    c = out["ppo"]
    p = run("train_ppo.py", "--steps", 3, "--out-dir", c, "--log", c / "p.csv", *SMALL)
    assert p.returncode == 0, p.stderr
    return out


def test_rollouts_are_the_whole_batch_the_loss_saw(runs):
    """Token means of the file's k3 KL and entropy equal the CSV's kl and entropy (the loss's own numbers):
    fails if the capture ran after the optimizer step, on other rows, or with another KL estimator."""
    recs = lines(runs["a"] / "g_rollouts.jsonl")
    csv = pd.read_csv(runs["a"] / "g.csv").set_index("step")
    assert [r["step"] for r in recs] == [1, 2, 3] and all(r["kind"] == "grpo" for r in recs)
    for rec in recs:
        cs = completions(rec)
        assert len(rec["groups"]) == 4 and len(cs) == 16
        kl, H = ([v for c in cs for v, m in zip(c[k], c["mask"], strict=True) if m] for k in ("kl", "entropy"))
        assert None not in kl + H and len(kl) == sum(sum(c["mask"]) for c in cs)
        assert sum(kl) / len(kl) == pytest.approx(csv.loc[rec["step"], "kl"], rel=1e-4, abs=1e-7)
        assert sum(H) / len(H) == pytest.approx(csv.loc[rec["step"], "entropy"], rel=1e-4)
        assert sum(c["reward"] for c in cs) / 16 == pytest.approx(csv.loc[rec["step"], "mean_r"], rel=1e-4)
        # GRPO: (r - group mean) / (group std + eps), recomputed from the file's own rewards
        adv = group_advantages(torch.tensor([c["reward"] for c in cs]), 4)
        assert [c["advantage"] for c in cs] == pytest.approx(adv.tolist(), abs=1e-4)
        for c in cs:
            n = sum(c["mask"])
            assert c["truncated"] == (c["pieces"][n - 1] != "|") and all(v is None for v in c["logp"][n:])
            assert sum(c["parts"].values()) > 0 or c["reward"] == 0
    assert all(v == 0 for c in completions(recs[0]) for v in c["kl"] if v is not None)  # step 1: pi_old = pi_ref


def recompute(model, tok, prompt, ids, n):
    """log-prob and entropy of the first n completion tokens, one unpadded row at a time (no KV cache, no
    left padding, no attention mask: a second implementation of completion_logprobs)."""
    x = torch.tensor([tok.encode(prompt) + ids])
    with torch.no_grad():
        logits, _ = model(x[:, :-1])
    lp = F.log_softmax(logits[0, len(tok.encode(prompt)) - 1 :].float(), -1)  # (T, V)
    logp = lp.gather(-1, x[0, len(tok.encode(prompt)) :, None]).squeeze(-1)
    return logp[:n].tolist(), (-(lp.exp() * lp).sum(-1))[:n].tolist()


def load_gpt(path, key):
    ck = load_checkpoint(path)
    model = GPT(GPTConfig(**ck["model_config"])).eval()
    model.load_state_dict(ck[key])
    return model


def test_rollouts_match_a_second_forward(runs, tiny_sft):
    """Step 1's numbers are the SFT policy's, step 3's the step-2 checkpoint's (pi_old), the reference's the SFT
    policy's, row by row: fails on a misaligned token (off by one), a row of another completion, the
    padding leaking into the numbers, or numbers taken after the update."""
    b = runs["b"]
    sft = load_gpt(tiny_sft / "policy.pth", "model")
    tok = CharTokenizer(load_checkpoint(tiny_sft / "policy.pth")["chars"])
    step2 = load_gpt(b / "step2.pt", "policy")
    recs = {r["step"]: r for r in lines(b / "g_rollouts.jsonl")}
    for step, pi_old in ((1, sft), (3, step2)):
        for g in recs[step]["groups"]:
            for c in g["completions"]:
                n = sum(c["mask"])
                assert tok.decode(c["ids"][:n]) == c["text"] == "".join(c["pieces"][:n])
                logp, H = recompute(pi_old, tok, g["prompt"], c["ids"], n)
                ref, _ = recompute(sft, tok, g["prompt"], c["ids"], n)
                assert c["logp"][:n] == pytest.approx(logp, abs=2e-4)
                assert c["entropy"][:n] == pytest.approx(H, abs=2e-4)
                assert c["ref_logp"][:n] == pytest.approx(ref, abs=2e-4)
                k3 = [math.exp(r - p) - (r - p) - 1 for r, p in zip(c["ref_logp"][:n], c["logp"][:n], strict=True)]
                assert c["kl"][:n] == pytest.approx(k3, abs=1e-5)
    assert any(abs(v) > 1e-4 for c in completions(recs[3]) for v in c["kl"] if v is not None)  # pi_old != pi_ref


def test_resumed_rollouts_equal_uninterrupted(runs):
    """The killed-and-resumed run's file has steps 1..3 once each (the line of step 3, written before the NaN
    stopped the run, is dropped on --resume) and equals the uninterrupted run's, but for the command."""
    strip = lambda r: {k: v for k, v in r.items() if k not in ("command", "config")}  # noqa: E731
    a, b = lines(runs["a"] / "g_rollouts.jsonl"), lines(runs["b"] / "g_rollouts.jsonl")
    assert [r["step"] for r in b] == [1, 2, 3]
    assert [strip(r) for r in a] == [strip(r) for r in b]
    assert "--resume" in b[-1]["command"] and "--resume" not in b[0]["command"]


def test_ppo_rollouts(runs):
    """PPO: per-token advantages (whitened, and GAE before whitening) and values; the file's token means
    equal the CSV's kl and entropy."""
    recs = lines(runs["ppo"] / "p_rollouts.jsonl")
    csv = pd.read_csv(runs["ppo"] / "p.csv").set_index("step")
    assert [r["step"] for r in recs] == [1, 2, 3] and recs[0]["kind"] == "ppo"
    for rec in recs:
        cs = completions(rec)
        kl = [v for c in cs for v in c["kl"] if v is not None]
        assert sum(kl) / len(kl) == pytest.approx(csv.loc[rec["step"], "kl"], rel=1e-4, abs=1e-7)
        for c in cs:
            n = sum(c["mask"])
            assert len(c["advantage"]) == len(c["adv_gae"]) == len(c["value"]) == len(c["mask"])
            assert None not in c["advantage"][:n] + c["adv_gae"][:n] + c["value"][:n]
        # whitened over the whole batch (all 16 completions are in the file): mean 0, std 1
        a = torch.tensor([v for c in cs for v in c["advantage"] if v is not None])
        assert a.mean().item() == pytest.approx(0, abs=1e-4) and a.std(unbiased=False).item() == pytest.approx(
            1, abs=1e-3
        )
        # the last real token's GAE advantage at gamma 1: score - V(s_last) - kl_coef * k1(last) (ppo.py)
        c = cs[0]
        n = sum(c["mask"])
        k1 = c["logp"][n - 1] - c["ref_logp"][n - 1]
        assert c["adv_gae"][n - 1] == pytest.approx(c["reward"] - 0.05 * k1 - c["value"][n - 1], abs=1e-4)
    assert len({round(v, 4) for v in completions(recs[0])[0]["advantage"] if v is not None}) > 1  # per token


class Page(HTMLParser):
    """Every tag's attributes, the prompts, the completion headers (.m) and the token titles of a page."""

    def __init__(self):
        super().__init__()
        self.stack, self.attrs, self.prompts, self.heads, self.titles = [], [], [], [], []
        self.tokens, self.rows, self.captions, self.texts = [], [], [], []  # .tk text, prompt rows, figcaptions

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        self.attrs.append((tag, a))
        if tag not in ("input", "br", "rect", "circle", "meta", "line"):
            self.stack.append(a.get("class", "") if tag != "figcaption" else "figcaption")
            if a.get("class") == "m":
                self.heads.append("")
            if a.get("class") == "tk":
                self.tokens.append("")
            if a.get("class") == "row":
                self.rows.append({"prompt": a["data-prompt"], "prompts": [], "who": []})
            if tag == "figcaption":
                self.captions.append("")
            if tag == "span" and "title" in a and "logp=" in a["title"]:
                self.titles.append(a["title"])

    def handle_endtag(self, tag):
        if tag not in ("input", "br", "rect", "circle", "meta", "line"):
            self.stack.pop()

    def handle_data(self, data):
        if self.stack and self.stack[-1] == "pr":
            self.prompts.append(data)
            if "row" in self.stack:
                self.rows[-1]["prompts"].append(data)
        if self.stack and self.stack[-1] == "who" and "row" in self.stack:
            self.rows[-1]["who"].append(data)
        if "m" in self.stack:
            self.heads[-1] += data
        if "tk" in self.stack:
            self.tokens[-1] += data
        if "figcaption" in self.stack:
            self.captions[-1] += data
        if "cmd" not in self.stack:  # the command line is the user's, as typed
            self.texts.append(data)


def parse(path):
    p = Page()
    p.feed(open(path, encoding="utf-8").read())
    p.close()
    assert not p.stack  # every tag closed
    return p


def no_external(p, text):
    for _tag, a in p.attrs:
        for k in ("src", "href"):
            assert not re.match(r"\s*(https?:)?//", a.get(k) or ""), a
    assert "url(" not in text and "@import" not in text and "<script" not in text


def test_page_holds_every_group(runs, tmp_path):
    """Each group of the file, in order, with its prompt and its completions sorted by reward, each with
    its reward and advantage, and a hover title per real token; nothing loaded from outside."""
    out = tmp_path / "g.html"
    p = run("view.py", runs["a"] / "g.csv", "-o", out)
    assert p.returncode == 0, p.stderr
    page = parse(out)
    no_external(page, out.read_text())
    recs = lines(runs["a"] / "g_rollouts.jsonl")
    want_prompts, want_heads = [], []
    for rec in recs:
        for g in rec["groups"]:
            want_prompts.append(g["prompt"])
            for c in sorted(g["completions"], key=lambda c: -c["reward"]):
                a = f"{c['advantage']:+.3f}".replace("-0.000", "+0.000")  # an all-equal group's 0, not -0.000
                want_heads.append((f"r {c['reward']:+.3f}", f"A {a}"))
    assert page.prompts == want_prompts
    assert [(h.split(" (")[0], "A " + h.split(" A ")[1].split()[0]) for h in page.heads] == want_heads
    assert len(page.titles) == sum(sum(c["mask"]) for r in recs for c in completions(r))
    assert all(f"step {r['step']}</summary>" in out.read_text() for r in recs)
    assert "grpo_summary.json)</summary>" in out.read_text() and "final_eval" in out.read_text()  # from --out-dir
    assert "python" in recs[0]["command"] and html.escape(recs[0]["command"]) in out.read_text()


def test_page_side_by_side_and_curves_only(runs, tmp_path):
    """GRPO and PPO on one page: every step holds both runs; PPO's tokens carry their own advantages. A CSV
    without a rollouts file gets the curves and no rollouts section."""
    out = tmp_path / "both.html"
    p = run("view.py", runs["a"] / "g.csv", runs["ppo"] / "p.csv", "-o", out)
    assert p.returncode == 0, p.stderr
    text = out.read_text()
    page = parse(out)
    no_external(page, text)
    for step in (1, 2, 3):
        section = text.split(f"step {step}</summary>")[1].split("</details>")[0]
        assert "g (grpo)" in section and "p (ppo)" in section
    assert any("A_gae=" in t for t in page.titles) and "<svg" in text
    alone = tmp_path / "alone.csv"
    shutil.copy(runs["a"] / "g.csv", alone)
    p = run("view.py", alone, "-o", tmp_path / "alone.html")
    assert p.returncode == 0, p.stderr
    text = (tmp_path / "alone.html").read_text()
    assert "<svg" in text and "mean_r" in text and "<h2>Rollouts" not in text


def test_bad_input_one_line(runs, tmp_path):
    """A missing CSV, a file that is not a metrics CSV, and a broken rollouts line: one line, exit 2."""
    bad_csv = tmp_path / "bad.csv"
    bad_csv.write_bytes(b"\x00\xff\xfegarbage\n\x01")
    no_step = tmp_path / "nostep.csv"
    no_step.write_text("a,b\n1,2\n")
    broken = tmp_path / "r.csv"
    shutil.copy(runs["a"] / "g.csv", broken)
    (tmp_path / "r_rollouts.jsonl").write_text(open(runs["a"] / "g_rollouts.jsonl").readline() + '{"step": 2, "gro\n')
    cases = [(tmp_path / "nope.csv", "not found"), (bad_csv, "not a metrics CSV"), (no_step, "not a metrics CSV"),
             (broken, "line 2 is not a rollouts record")]  # fmt: skip
    for path, msg in cases:
        p = run("view.py", path, "-o", tmp_path / "x.html")
        assert p.returncode == 2 and msg in p.stderr and len(p.stderr.strip().splitlines()) == 1, p.stderr
    assert not (tmp_path / "x.html").exists()


def test_wandb_missing_is_one_line(tmp_path):
    """--wandb without the package: one line naming it and exit 2, before any training."""
    try:
        import wandb  # noqa: F401

        pytest.skip("wandb is installed")
    except ImportError:
        pass
    for script in ("train_grpo.py", "train_ppo.py"):
        p = run(script, "--wandb", "--steps", 1, "--out-dir", tmp_path, "--log", tmp_path / "w.csv")
        assert p.returncode == 2 and "wandb package is not installed" in p.stderr, p.stderr
        assert len(p.stderr.strip().splitlines()) == 1 and not (tmp_path / "policy.pth").exists()


def test_read_csv_and_plot_smoothing(tmp_path):
    """read_csv (pandas now) keeps its meaning: None for an empty cell, nan for "nan"; plot.smooth is the
    trailing mean whose first points average what exists (hand-computed)."""
    from plot import smooth

    f = tmp_path / "m.csv"
    f.write_text("step,a,b\n0,,1\n1,nan,2.5\n2,3,\n")
    cols = read_csv(f)
    assert cols["step"] == [0.0, 1.0, 2.0] and cols["a"][0] is None and math.isnan(cols["a"][1])
    assert cols["a"][2] == 3.0 and cols["b"] == [1.0, 2.5, None]
    (tmp_path / "empty.csv").write_text("")
    assert read_csv(tmp_path / "empty.csv") == {}
    assert smooth(pd.Series([1.0, 2.0, 3.0, 6.0]), 2).tolist() == [1.0, 1.5, 2.5, 4.5]
    assert smooth(pd.Series([1.0, 2.0, 3.0, 6.0]), 3).tolist() == [1.0, 1.5, 2.0, 11 / 3]


FAKE_WANDB = '''"""A stand-in for the wandb package (tests): records what the driver sends."""
import json, os


def _w(kind, obj):
    with open(os.environ["FAKE_WANDB_OUT"], "a") as f:
        f.write(json.dumps([kind, obj]) + "\\n")


class Table:
    def __init__(self, columns):
        self.columns, self.rows = columns, []

    def add_data(self, *row):
        assert len(row) == len(self.columns)
        self.rows.append(row)


def init(project=None, name=None, config=None, resume=None):
    _w("init", {"project": project, "name": name, "steps": config["steps"]})


def log(d, step=None):
    tables = {k: len(v.rows) for k, v in d.items() if isinstance(v, Table)}
    _w("log", {"step": step, "keys": sorted(k for k in d if k not in tables), "tables": tables})


def finish():
    _w("finish", None)
'''


def test_wandb_sends_rows_and_tables(sft_dir, tmp_path):
    """--wandb with a stand-in wandb module: one init with the flags, every CSV row, a 16-row rollouts table at
    each logged step, and finish: fails on a wrong call signature or a table row of the wrong width."""
    (tmp_path / "wandb.py").write_text(FAKE_WANDB)
    out = tmp_path / "wandb.jsonl"
    env = {"PYTHONPATH": str(tmp_path), "FAKE_WANDB_OUT": str(out)}
    for script, log in (("train_grpo.py", "g.csv"), ("train_ppo.py", "p.csv")):
        out.unlink(missing_ok=True)
        args = ["--steps", 3, "--out-dir", sft_dir, "--log", sft_dir / log, "--wandb", "--wandb-run-name", "t", *SMALL]
        p = run(script, *args, env=env)
        assert p.returncode == 0, p.stderr
        calls = lines(out)
        assert calls[0] == ["init", {"project": "nanogrpo", "name": "t", "steps": 3}] and calls[-1][0] == "finish"
        logs = [c[1] for c in calls if c[0] == "log"]
        assert [x["step"] for x in logs if not x["tables"]] == [0, 1, 2, 3]
        assert [(x["step"], x["tables"]) for x in logs if x["tables"]] == [(s, {"rollouts": 16}) for s in (1, 2, 3)]
        header = open(sft_dir / log).readline().strip().split(",")
        assert set(logs[-1]["keys"]) <= set(header) and "mean_r" in logs[-1]["keys"]


def test_environment_tokens_drawn_apart_and_padding_not_drawn(runs, tmp_path):
    """Tokens the environment wrote (env_mask 1) get the env style and no policy colour; the positions after
    the end token (padding, the pad id) are not drawn at all: each completion's tokens read its text, the end
    token included, and no more (fails if the padding comes back as a row of struck '|' glyphs)."""
    rec = lines(runs["a"] / "g_rollouts.jsonl")[0]
    c0 = rec["groups"][0]["completions"][0]
    c0["env_mask"] = [1, 1] + [0] * (len(c0["mask"]) - 2)
    shutil.copy(runs["a"] / "g.csv", tmp_path / "e.csv")
    (tmp_path / "e_rollouts.jsonl").write_text(json.dumps(rec) + "\n")
    p = run("view.py", tmp_path / "e.csv", "-o", tmp_path / "e.html")
    assert p.returncode == 0, p.stderr
    page = parse(tmp_path / "e.html")
    spans = [a for tag, a in page.attrs if tag == "span" and "title" in a]
    assert sum(a["class"] == "env" for a in spans) == 2
    cs = completions(rec)
    assert any(0 in c["mask"] for c in cs)  # some completion is padded, so the test can fail
    want = ["".join(view.show_piece(p) for p in c["pieces"][: sum(c["mask"])]) for c in cs]
    assert sorted(page.tokens) == sorted(want)
    assert not any(a.get("class") == "pad" for _tag, a in page.attrs)


def sig_digits(s):
    """Significant digits of a decimal as printed: 0.30000000000000004 -> 17, 0.0750 -> 2, 1.1e-05 -> 2."""
    mantissa = s.lower().split("e")[0].lstrip("+-").replace(".", "")
    return len(mantissa.strip("0"))


def test_numbers_rounded_everywhere(runs, tmp_path):
    """Every decimal the page prints (summary, flags, headers, reward parts, tooltips, axis labels) has at most
    4 significant digits, the float noise of a real summary (eval_r 0.5739999999999991, as the default run
    logs it) and of the file included: fails if one place prints a raw float again."""
    rec = lines(runs["a"] / "g_rollouts.jsonl")[0]
    c = rec["groups"][0]["completions"][0]
    c["reward"], c["parts"]["exact"] = 0.30000000000000004, 0.30000000000000004
    c["logp"][0], c["entropy"][0] = -0.123456789123, 0.987654321
    rec["config"]["lr"] = 0.30000000000000004
    shutil.copy(runs["a"] / "g.csv", tmp_path / "n.csv")
    (tmp_path / "n_rollouts.jsonl").write_text(json.dumps(rec) + "\n")
    summary = {"steps": 3, "final_eval": {"eval_acc": 0.474, "eval_r": 0.5739999999999991}, "time_s": 12.3456789}
    (tmp_path / "n_summary.json").write_text(json.dumps(summary))
    p = run("view.py", tmp_path / "n.csv", "-o", tmp_path / "n.html")
    assert p.returncode == 0, p.stderr
    page = parse(tmp_path / "n.html")
    printed = " ".join(page.texts) + " " + " ".join(a.get("title", "") for _tag, a in page.attrs)
    decimals = re.findall(r"\d*\.\d+(?:e[-+]?\d+)?", printed)
    assert "0.574" in printed and "lr: 0.3\n" in printed and "12.35" in printed  # the noisy ones, rounded
    assert len(decimals) > 100
    assert all(sig_digits(d) <= 4 for d in decimals), [d for d in decimals if sig_digits(d) > 4][:5]


def test_ticks_are_round_and_cover_the_data():
    """view.ticks by hand: steps of 1, 2, 2.5 or 5 x 10^k, labels without float noise, the data inside."""
    assert view.ticks(0.0, 1.0)[1] == ["0.0", "0.2", "0.4", "0.6", "0.8", "1.0"]
    assert view.ticks(0.2398, 1.096)[1] == ["0.2", "0.4", "0.6", "0.8", "1.0", "1.2"]
    assert view.ticks(-0.015, 0.005)[1] == ["-0.015", "-0.010", "-0.005", "0.000", "0.005"]
    assert view.ticks(1, 1200, 6, integer=True, extend=False)[1] == ["200", "400", "600", "800", "1000", "1200"]
    assert view.ticks(0, 60, 6, integer=True, extend=False)[1] == ["0", "10", "20", "30", "40", "50", "60"]
    for lo, hi in [(9.5e-05, 0.05814), (0.007543, 0.3985), (0.9278, 1.0), (0.3, 0.3), (27, 32), (1e-7, 3e-7)]:
        vals, labels = view.ticks(lo, hi)
        assert vals[0] <= lo and vals[-1] >= hi and len(vals) >= 2
        assert len(set(labels)) == len(labels) and all(sig_digits(s) <= 3 for s in labels), labels


def test_panel_labels_inside_and_enough_ticks():
    """Every label of a curve panel lies inside the SVG (at 6.5 px a character of a 10 px font, DejaVu Sans'
    digits take 6.4), with at least 4 y ticks and 3 x ticks: fails on the old panel, whose 46 px margin cut
    '0.007543' and '9.5e-05' off and which had 2 ticks an axis."""
    df = pd.DataFrame({"step": range(0, 1201), "a": [9.5e-05 + i * 4.8e-05 for i in range(1201)]})
    df["b"] = 0.007543 + df["step"] / 1200 * 0.391
    run_ = {"label": "x", "df": df}
    for col in ("a", "b"):
        svg = view.panel([run_], col)
        w = float(re.search(r'width="(\d+)"', svg).group(1))
        texts = re.findall(r'<text x="([\d.]+)" y="[\d.]+" class="(\w+)[^"]*">([^<]*)</text>', svg)
        ylab = [(float(x), s) for x, cls, s in texts if cls == "l"]
        xlab = [(float(x), s) for x, cls, s in texts if cls == "b" and s != "step"]
        assert len(ylab) >= 4 and len(xlab) >= 3, texts
        for x, s in ylab:  # right-aligned at x
            assert x - 6.5 * len(s) >= 0, (col, x, s)
        for x, s in xlab:  # centred at x
            assert x - 3.25 * len(s) >= 0 and x + 3.25 * len(s) <= w, (col, x, s)
        assert "<figcaption>" in svg.split("</svg>")[1]


def test_captions_and_headings(runs, tmp_path):
    """Every curve panel has a caption saying what its column is (none falls back to the generic line for the
    drivers' own columns, GRPO's and PPO's), the panels sit under headings, and each colour mode has its own
    one-line caption beside its key."""
    out = tmp_path / "cap.html"
    p = run("view.py", runs["a"] / "g.csv", runs["ppo"] / "p.csv", "-o", out)
    assert p.returncode == 0, p.stderr
    text = out.read_text()
    page = parse(out)
    n_svg = text.count('<svg class="c"')
    assert n_svg > 10 and len(page.captions) == n_svg and text.count('<figure class="pn">') == n_svg
    assert all(len(c) > 30 and "column against step" not in c for c in page.captions), page.captions
    assert len(set(page.captions)) == n_svg  # one per column, not one line for all
    headings = re.findall(r'<h3 class="sec">([^<]+)</h3>', text)
    assert len(headings) >= 3 and "Reward and accuracy" in headings
    for q in view.QUANTITIES:
        key = text.split(f'<span class="key k-{q}">')[1].split('<span class="key')[0]
        assert html.escape(view.MODE_CAPTIONS[q]) in key


def test_groups_matched_by_prompt(runs, tmp_path):
    """GRPO beside PPO: the PPO file lists its groups in the reverse order and lacks one of them, yet each
    prompt's GRPO group and PPO group sit in one row (GRPO first), and the prompt PPO lacks gets a row with an
    empty PPO cell: fails if the groups are laid out in each file's own order."""
    g_recs = lines(runs["a"] / "g_rollouts.jsonl")
    p_recs = lines(runs["ppo"] / "p_rollouts.jsonl")
    for rec in p_recs:
        rec["groups"] = rec["groups"][::-1][:-1]  # reversed, and the GRPO file's first prompt dropped
    shutil.copy(runs["ppo"] / "p.csv", tmp_path / "p.csv")
    (tmp_path / "p_rollouts.jsonl").write_text("".join(json.dumps(r) + "\n" for r in p_recs))
    out = tmp_path / "rows.html"
    p = run("view.py", runs["a"] / "g.csv", tmp_path / "p.csv", "-o", out)
    assert p.returncode == 0, p.stderr
    page = parse(out)
    want = []  # per step, every GRPO prompt; the PPO file holds all but the first
    for g_rec, p_rec in zip(g_recs, p_recs, strict=True):
        gp, pp = [g["prompt"] for g in g_rec["groups"]], [g["prompt"] for g in p_rec["groups"]]
        assert sorted(pp) == sorted(gp[1:]) and pp != gp[1:]  # same prompts (same seed), another order
        want += [(q, 2 if q in pp else 1) for q in gp]
    assert [(r["prompt"], len(r["prompts"])) for r in page.rows] == want
    for r in page.rows:
        assert set(r["prompts"]) == {r["prompt"]}
        assert r["who"][0] == "g (grpo)" and r["who"][1] == "p (ppo)"


def test_plot_band_legend_names_the_seed_count(tmp_path):
    """plot.py: a seed group's legend entry says it is the mean with a +-1 std band and how many seeds went in
    (3 and 2 here, not a fixed number); the band is mean +- the population std, by hand."""
    import matplotlib.pyplot as plt

    from plot import draw, group_runs, load

    paths = []
    for name, vals in (("a", [1.0, 2.0, 3.0]), ("b", [5.0, 7.0])):
        for k, v in enumerate(vals, 1):
            f = tmp_path / f"{name}_seed{k}.csv"
            f.write_text(f"step,mean_r\n1,{v}\n2,{v + 1}\n")
            paths.append(str(f))
    fig, ax = plt.subplots()
    draw(ax, {p: load(p) for p in paths}, group_runs(paths), "mean_r", "step", 1, None, None)
    legend = [t.get_text() for t in ax.get_legend().get_texts()]
    assert legend == ["a: mean of 3 seeds, band: ±1 std", "b: mean of 2 seeds, band: ±1 std"]
    band = ax.collections[0].get_paths()[0].vertices[:, 1]
    sd = (2 / 3) ** 0.5  # std of 1, 2, 3 with ddof 0
    assert min(band) == pytest.approx(2 - sd) and max(band) == pytest.approx(3 + sd)
    plt.close(fig)
