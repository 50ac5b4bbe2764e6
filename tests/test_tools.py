"""Tools in the rollout (issue 20, docs/tools.md): the environment's replies written through the KV-cache decode,
marked by the environment mask and left out of every loss term, normaliser, column and SFT target.

Each test names the plausible bug it catches.
"""

import csv
import json
import os
import shutil
import subprocess
import sys

import pytest
import torch
from conftest import ROOT, TINY, run

from grpo import LOSS_TYPES, completion_mask, group_advantages, grpo_loss
from model import END, GPT, CharTokenizer, GPTConfig, completion_logprobs, left_pad, sample
from tasks import TaskError, complete, load_task, sft_batch_from_examples, total_reward
from tasks.chain import chain_steps, chain_worked, thinks
from tasks.chain_tool import ChainToolTask, calculator, chain_tool_worked
from utils.ckpt import load_checkpoint, save_checkpoint

VOCAB = "ab#0123"


def tiny(seed=0):
    torch.manual_seed(seed)
    tok = CharTokenizer(VOCAB)
    model = GPT(GPTConfig(vocab_size=tok.vocab_size, block_size=48, n_layer=2, n_head=2, n_embd=32))
    return model.eval(), tok


def reply_for(tok):
    """A hand-written environment that depends on the row and on the text it is given (its length): a hook
    that passed the wrong ids, or the wrong row's, gets another reply."""
    return lambda i, ids: tok.encode(str(len(ids) % 4) * (1 + i % 3))


def reference(model, tok, rows, T, u, temperature, trigger, reply):
    """The obviously-correct rollout: one row at a time, no padding, no cache, the whole context recomputed for
    every token; after a call the reply's tokens are written one per position (log-prob 0, env 1)."""
    toks, lps, envs = [], [], []
    for i, r in enumerate(rows):
        ids, out, lp_row, env_row, queue, done = list(r), [], [], [], [], False
        for t in range(T):
            if done:  # after the end token: the end token, log-prob 0
                nxt, lp, e = tok.eos_id, 0.0, 0.0
            elif queue:
                nxt, lp, e = queue.pop(0), 0.0, 1.0
            else:
                with torch.no_grad():
                    logits, _ = model(torch.tensor([ids]))
                x, lpx = sample(logits[:, -1].float(), u[i : i + 1, t : t + 1], temperature)
                nxt, lp, e = int(x), float(lpx), 0.0
                if nxt == trigger:
                    queue = reply(i, out + [nxt])[: T - t - 1]
            out.append(nxt)
            lp_row.append(lp)
            env_row.append(e)
            ids.append(nxt)
            done = done or nxt == tok.eos_id
        toks.append(out)
        lps.append(lp_row)
        envs.append(env_row)
    return torch.tensor(toks), torch.tensor(lps), torch.tensor(envs)


@pytest.mark.parametrize("temperature", [1.0, 0.0])
def test_tool_rollout_matches_plain_loop(temperature):
    """generate with a tool == the plain loop, in tokens, env mask and log-probs, on left-padded prompts.
    Bugs: the reply fed back at the wrong position or not through the cache (later log-probs differ), the
    uniforms shifted after a forced position (tokens differ), a forced token's log-prob or env flag not
    written, a reply not cut at max_new_tokens, the hook given another row's text, padding that leaks."""
    model, tok = tiny()
    rows = [tok.encode(p) for p in ["ab", "b#a0a", "a", "ba1", "0b", "aab3"]]
    idx, pmask = left_pad(rows, tok.pad_id)
    T = 14
    u = torch.rand(len(rows), T, generator=torch.Generator().manual_seed(1))
    plain, _ = model.generate(idx, T, temperature=temperature, eos_id=tok.eos_id, uniforms=u, attention_mask=pmask)
    trigger = int(plain[0, 0]) if temperature == 0 else tok.stoi["#"]  # greedy: row 0 calls at its first token
    reply = reply_for(tok)
    out, logp, env = model.generate(
        idx, T, temperature=temperature, eos_id=tok.eos_id, uniforms=u, attention_mask=pmask, tool=reply,
        trigger_id=trigger,
    )  # fmt: skip
    ref_tok, ref_lp, ref_env = reference(model, tok, rows, T, u, temperature, trigger, reply)
    assert env.sum() >= 3, "the test needs calls"
    assert torch.equal(out, ref_tok)
    assert torch.equal(env, ref_env)
    torch.testing.assert_close(logp, ref_lp, atol=1e-5, rtol=1e-5)
    assert (logp[env.bool()] == 0).all()


def test_reply_is_cut_at_max_new_tokens():
    """A reply longer than the room left fills the rest of the completion and no end token follows: the
    completion is truncated. Bug: a reply written past T, or sampling resumed over it."""
    model, tok = tiny()
    idx = torch.tensor([tok.encode("ab")])
    first = int(model.generate(idx, 1, temperature=0.0, eos_id=tok.eos_id)[0][0, 0])
    out, logp, env = model.generate(
        idx, 8, temperature=0.0, eos_id=tok.eos_id, tool=lambda i, ids: tok.encode("0" * 100), trigger_id=first
    )
    assert out[0].tolist() == [first] + tok.encode("0" * 7)
    assert env[0].tolist() == [0.0] + [1.0] * 7 and logp[0, 1:].abs().sum() == 0


def test_no_tool_path_unchanged():
    """A tool that is never called leaves tokens and log-probs bit for bit as generate without one, and the
    return value without a tool is the old (tokens, logp). Bug: the hook's bookkeeping changing a number."""
    model, tok = tiny()
    idx, pmask = left_pad([tok.encode(p) for p in ["ab", "b#a0a", "a"]], tok.pad_id)
    u = torch.rand(3, 10, generator=torch.Generator().manual_seed(2))
    kw = dict(temperature=1.0, eos_id=tok.eos_id, uniforms=u, attention_mask=pmask)
    plain = model.generate(idx, 10, **kw)
    assert len(plain) == 2
    out, logp, env = model.generate(idx, 10, tool=lambda i, ids: pytest.fail("called"), trigger_id=-1, **kw)
    assert torch.equal(out, plain[0]) and torch.equal(logp, plain[1]) and env.sum() == 0


def masks(N=6, T=9, seed=0):
    """A completion mask with end tokens at different places and an env mask inside it, as a rollout gives."""
    g = torch.Generator().manual_seed(seed)
    tokens = torch.randint(0, 5, (N, T), generator=g)  # 4 is the end token
    cmask = completion_mask(tokens, 4)
    env = (torch.rand(N, T, generator=g) < 0.3).float() * cmask
    env[0, 1:3] = 1.0  # at least some environment tokens, and some rows without any
    env[1] = 0.0
    env = env * cmask
    return cmask, env


CASES = [dict(loss_type=lt) for lt in LOSS_TYPES] + [
    dict(loss_type="grpo", importance_level="sequence"),
    dict(loss_type="grpo", top_entropy_quantile=0.5),
    dict(loss_type="dapo", entropy_coef=0.1),
    dict(loss_type="grpo", delta=1.5),
]


@pytest.mark.parametrize("kw", CASES, ids=lambda kw: "-".join(f"{v}" for v in kw.values()))
def test_env_tokens_get_zero_gradient(kw):
    """With mask = completion mask * (1 - env) (train_grpo.py's rollout section), changing the log-probs,
    old and reference log-probs and entropies of environment tokens changes neither the loss nor any
    gradient, and their own gradient is exactly 0, under every loss type. Bug: a term that is not masked
    (the KL, the entropy bonus, GSPO's sequence mean, the top-entropy quantile)."""
    cmask, env = masks()
    mask = cmask * (1 - env)
    g = torch.Generator().manual_seed(3)
    N, T = mask.shape
    logp0, old0, ref0 = (-torch.rand(N, T, generator=g) * 2 for _ in range(3))
    H0, adv = torch.rand(N, T, generator=g), torch.randn(N, generator=g)

    def loss_and_grads(shift):
        logp = (logp0 + shift * env).requires_grad_(True)
        H = (H0 + shift * env).requires_grad_(True)
        loss, _ = grpo_loss(logp, old0 - shift * env, ref0 + 2 * shift * env, adv, mask, entropy=H, **kw)
        loss.backward()
        return loss.detach(), logp.grad, H.grad

    a, b = loss_and_grads(0.0), loss_and_grads(-3.0)
    assert torch.equal(a[0], b[0])
    for ga, gb in zip(a[1:], b[1:], strict=True):
        if ga is None:  # no entropy term: H has no gradient at all
            assert gb is None
            continue
        assert torch.equal(ga, gb)
        assert (ga[env.bool()] == 0).all()
    assert a[1][mask.bool()].abs().sum() > 0  # the model's tokens do get a gradient


@pytest.mark.parametrize("loss_type", ["grpo", "bnpo", "dapo", "cispo", "dr_grpo"])
def test_normalisers_count_model_tokens_only(loss_type):
    """At ratio 1 and KL 0 every token's loss is -A_i: the loss is, by hand, the mean of -A_i (grpo, a mean
    per completion), sum_i -A_i n_i / sum_i n_i (bnpo, dapo, cispo), sum_i -A_i n_i / (N T) (dr_grpo), with
    n_i the model's tokens of completion i. Bug: environment tokens counted in n_i or in the denominator."""
    cmask, env = masks(seed=1)
    mask = cmask * (1 - env)
    N, T = mask.shape
    adv = torch.randn(N, generator=torch.Generator().manual_seed(4))
    logp = torch.full((N, T), -1.0)
    loss, _ = grpo_loss(logp, logp, logp, adv, mask, loss_type=loss_type)
    n = mask.sum(1)
    assert n.min() > 0 and (env.sum(1) > 0).any()
    want = {
        "grpo": (-adv).mean(),
        "bnpo": (-adv * n).sum() / n.sum(),
        "dapo": (-adv * n).sum() / n.sum(),
        "cispo": (adv * n).sum() / n.sum(),  # -w A log p with w = 1, log p = -1
        "dr_grpo": (-adv * n).sum() / (N * T),
    }[loss_type]
    assert loss.item() == pytest.approx(want.item(), rel=1e-5, abs=1e-7)


# -----------------------------------------------------------------------------
# the chain_tool task and SFT


def test_calculator_and_formats():
    """Bugs: a wrong value, a call read from the wrong place, a format that refuses the tool's steps."""
    assert calculator("", "<7*3#") == "21" and calculator("", "<7*3#21;21+5#") == "26"
    assert calculator("", "<7*#") == "?" and calculator("", "#") == "?" and calculator("", "<7*3#21;+5#") == "?"
    t = ChainToolTask()
    p = "7*3+5*2+4="
    assert chain_tool_worked(p) == "<7*3#21;21+5#26;26*2#52;52+4#56>56"
    good = [chain_tool_worked(p) + END, chain_worked(p) + END, "56" + END, "<7*3#21;21+5=26;26*2#52;52+4#56>56|"]
    assert t.well_formed([p] * 4, good) == [1.0] * 4
    assert t.correct([p] * 4, good) == [1.0] * 4
    assert t.well_formed([p, p], ["<7*3#21>", "<7*3#21;+5=26>26|"]) == [0.0, 0.0]


def test_sft_never_trains_on_a_reply():
    """y (the SFT targets) is -1 exactly where the calculator wrote, and the completion's tokens elsewhere;
    x still holds the replies (context). Bug: replies learned as targets, or the mask shifted by one."""
    tok = CharTokenizer(ChainToolTask.chars)
    p = "7*3+5*2+4="
    comp = chain_tool_worked(p) + END
    x, y = sft_batch_from_examples([(p, comp), (p, chain_worked(p) + END)], tok, calculator, "#")
    P, body = len(p), comp[: -len(END)]
    replies = set()
    k = 0
    while (k := body.find("#", k)) >= 0:  # by hand: the digits after each "#"
        j = k + 1
        while body[j].isdigit():
            replies.add(j)
            j += 1
        k = j
    assert len(replies) == len("21265256")
    assert tok.decode(x[0, P:].tolist()).startswith(body)  # the replies are in the context
    for i in range(len(body) + 1):  # target of completion position i sits at y[P + i - 1]
        want = -1 if i in replies else (tok.encode(body[i])[0] if i < len(body) else tok.eos_id)
        assert y[0, P + i - 1].item() == want, i
    assert (y[1] != -1).sum() == len(chain_worked(p)) + 1  # no tool: every completion token is a target
    with pytest.raises(TaskError, match="tool replies"):
        sft_batch_from_examples([(p, "<7*3#22;21+5=26>26" + END)], tok, calculator, "#")


def test_chain_tool_sft_mix():
    """At most 1% of SFT rows call the calculator (the issue's target), and some do; the other kinds of rows
    in their shares, right, and the full chains never held-out ones; every row's replies are out of its
    targets. Bugs: a share off by a factor, a shorter chain cut in the wrong place or answered wrong, the
    calculator in a practice row, the task's sft_batch not passing the tool."""
    t = ChainToolTask()
    rows = t.sft_examples(torch.Generator().manual_seed(0), 20000)
    share = sum("#" in c for _, c in rows) / len(rows)
    expected = (1 - t.fact_frac - t.short_frac) * t.worked_frac * t.sft_tool_frac  # of the rows
    assert 0.002 < expected <= 0.01 and share == pytest.approx(expected, abs=0.0015)
    steps = [p.count("*") + p.count("+") for p, _ in rows]
    full = [c for (p, c), k in zip(rows, steps, strict=True) if k == 4]
    assert all(p in t.train for (p, _), k in zip(rows, steps, strict=True) if k == 4)  # never a held-out chain
    assert sum(k in (2, 3) for k in steps) / len(rows) == pytest.approx(t.short_frac, abs=0.015)
    assert sum(k == 1 for k in steps) / len(rows) == pytest.approx(t.fact_frac, abs=0.015)
    assert sum(map(thinks, full)) / len(full) == pytest.approx(t.worked_frac, abs=0.02)
    for (p, c), k in zip(rows, steps, strict=True):  # facts and shorter chains: right, and in the head
        if k < 4:
            assert "#" not in c and c == (chain_worked(p) if k > 1 else str(chain_steps(p)[-1][1])) + END, (p, c)
            assert t.correct([p], [c]) == [1.0]
    tok = CharTokenizer(t.chars)
    x, y, seg = t.sft_batch(torch.Generator().manual_seed(5), 2000, tok)  # packed rows
    assert x.size(1) == t.block_size and (y[seg == -1] == -1).all()
    hash_id = tok.stoi["#"]
    after = torch.zeros_like(y, dtype=torch.bool)
    after[:, 1:] = x[:, 1:] == hash_id  # y[:, j] predicts x[:, j + 1]: the first reply token after a call
    assert after.any() and (y[after[:, : y.size(1)]] == -1).all()


# -----------------------------------------------------------------------------
# the driver


CALLS_OFTEN = """
from tasks.chain_tool import ChainToolTask


class CallsOften(ChainToolTask):  # chain_tool (its name, vocabulary and format) with every worked full chain
    sft_tool_frac = 1.0  # calling the calculator: 8% of the SFT rows, so a 40-step policy calls it often
"""


def tool_sft(tmp_path, name="sft"):
    d = tmp_path / name
    (tmp_path / "calls_often.py").write_text(CALLS_OFTEN)
    p = run("train_grpo.py", "--task", f"{tmp_path / 'calls_often.py'}:CallsOften", "--steps", 1, "--sft-steps", 40,
            *TINY, *SMALL, "--out-dir", d, "--log", d / "g.csv")  # fmt: skip
    assert p.returncode == 0, p.stderr
    assert float(rows(d / "g.csv")[1]["tool_frac"]) > 0.1, "the tests below need a policy that calls the calculator"
    return d


SMALL = ["--batch-size", 4, "--group-size", 4, "--eval-every", 50, "--no-progress", "--seed", 1]


@pytest.fixture(scope="module")
def chain_tool_sft(tmp_path_factory):
    """A tiny chain_tool SFT policy that calls the calculator in a good share of its samples."""
    return tool_sft(tmp_path_factory.mktemp("tools"))


def fresh(src, dst):
    dst.mkdir()
    shutil.copy(src / "policy.pth", dst / "policy.pth")
    return dst


def rows(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_driver_gradient_leaves_env_tokens_out(chain_tool_sft, tmp_path):
    """The gradient train_grpo.py computes at step 1 equals one computed here from the same rollout with
    mask = completion mask * (1 - env), and differs from the one with the environment's tokens in.
    Bug: the driver training on the calculator's replies (a loss term or a token count that sees them)."""
    d = fresh(chain_tool_sft, tmp_path / "a")
    flags = ["--steps", 1, "--loss-type", "dapo", "--beta", 0.04, "--debug-trace", d / "t.pt", *TINY, *SMALL]
    p = run("train_grpo.py", "--task", "chain_tool", "--out-dir", d, "--log", d / "g.csv", *flags)
    assert p.returncode == 0, p.stderr
    trace = [x for x in torch.load(d / "t.pt", weights_only=True) if "grads" in x]

    task, ck = load_task("chain_tool"), load_checkpoint(d / "policy.pth")
    tok = CharTokenizer(task.chars)
    model = GPT(GPTConfig(**ck["model_config"]))
    model.load_state_dict(ck["model"])
    B, G, T = 4, 4, task.max_new_tokens
    g = torch.Generator().manual_seed(1 * 1_000_003 + 1)  # step 1's generator, as the driver seeds it
    prompts = [p for p in task.sample_prompts(g, B) for _ in range(G)]
    u = torch.rand(B * G, T, generator=g)
    texts, seq, pmask, cmask, env = complete(
        model, tok, prompts, T, uses_eos=True, temperature=1.0, uniforms=u, tool=task.tool, tool_trigger="#"
    )
    assert env.sum() > 0, "the rollout must call the calculator"
    adv = group_advantages(torch.tensor(total_reward(task.reward_funcs, prompts, texts)[0]), G)

    def grads(mask):
        model.zero_grad()
        logp, _ = completion_logprobs(model, seq, pmask.size(1), 1.0, pmask)
        loss, _ = grpo_loss(logp, logp.detach(), logp.detach(), adv, mask, beta=0.04, loss_type="dapo")
        loss.backward()
        return {n: q.grad.clone() for n, q in model.named_parameters()}

    mine, wrong = grads(cmask * (1 - env)), grads(cmask)
    for k, gk in trace[0]["grads"].items():
        torch.testing.assert_close(gk, mine[k], rtol=1e-4, atol=1e-6 * mine[k].abs().max().item(), msg=k)
    assert any(not torch.allclose(wrong[k], mine[k], rtol=1e-3) for k in mine)
    row = rows(d / "g.csv")[1]
    n_env, n_model = env.sum().item(), (cmask * (1 - env)).sum().item()
    assert float(row["env_frac"]) == pytest.approx(n_env / (n_env + n_model), rel=1e-5)
    assert float(row["len_mean"]) == pytest.approx(n_model / (B * G), rel=1e-5)  # model tokens only
    assert float(row["tool_calls"]) == pytest.approx(sum(t.count("#") for t in texts) / (B * G), rel=1e-5)
    assert float(row["tool_frac"]) == pytest.approx(sum("#" in t for t in texts) / (B * G), rel=1e-5)
    with open(d / "g_rollouts.jsonl") as f:  # view.py's file: replies inside the completion mask, marked env
        comps = [c for grp in json.loads(f.readline())["groups"] for c in grp["completions"]]
    for c, e, m in zip(comps, env, cmask, strict=False):
        assert c["env_mask"] == [int(v) for v in e.tolist()] and c["mask"] == [int(v) for v in m.tolist()]


def test_ddp_with_tools_matches_one_process(chain_tool_sft, tmp_path):
    """2 gloo ranks compute the gradient and the tool columns 1 process does. Bug: a rank's tool called with
    another rank's prompts, or the columns averaged per rank."""
    one, two = fresh(chain_tool_sft, tmp_path / "one"), fresh(chain_tool_sft, tmp_path / "two")
    flags = ["--task", "chain_tool", "--steps", 2, "--loss-type", "dapo", "--device", "cpu", *TINY, *SMALL]
    p = run("train_grpo.py", "--out-dir", one, "--log", one / "g.csv", "--debug-trace", one / "t.pt", *flags)
    assert p.returncode == 0, p.stderr
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "train_grpo.py"]
    cmd += ["--out-dir", str(two), "--metrics-csv", str(two / "g.csv"), "--debug-trace", str(two / "t.pt")]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    p = subprocess.run(cmd + [str(f) for f in flags], cwd=ROOT, capture_output=True, text=True, env=env, timeout=300)
    assert p.returncode == 0, p.stderr[-3000:]
    a = [x for x in torch.load(one / "t.pt", weights_only=True) if "grads" in x]
    b = [x for x in torch.load(two / "t.pt", weights_only=True) if "grads" in x]
    assert len(a) == len(b) == 2
    for x, y in zip(a, b, strict=True):
        for k, gk in x["grads"].items():
            torch.testing.assert_close(y["grads"][k], gk, rtol=1e-4, atol=1e-5 * gk.abs().max().item(), msg=k)
    for x, y in zip(rows(one / "g.csv")[1:], rows(two / "g.csv")[1:], strict=True):
        assert float(x["env_frac"]) > 0
        for col in ("tool_frac", "tool_calls", "env_frac", "len_mean", "mean_r"):
            assert float(x[col]) == pytest.approx(float(y[col]), rel=1e-5), col


def test_resume_with_tools_matches_uninterrupted(chain_tool_sft, tmp_path):
    """4 steps, then --resume to 8, ends where 8 uninterrupted steps do (parameters and every column but
    time). Bug: the tool's replies or the forced positions' random numbers depending on the process's history."""
    a, b = fresh(chain_tool_sft, tmp_path / "a"), fresh(chain_tool_sft, tmp_path / "b")
    flags = ["--task", "chain_tool", "--lr-schedule", "constant", "--ckpt-every", 4, *TINY, *SMALL]
    p = run("train_grpo.py", "--out-dir", a, "--log", a / "g.csv", "--steps", 8, *flags)
    assert p.returncode == 0, p.stderr
    p = run("train_grpo.py", "--out-dir", b, "--log", b / "g.csv", "--steps", 4, *flags)
    assert p.returncode == 0, p.stderr
    p = run("train_grpo.py", "--out-dir", b, "--log", b / "g.csv", "--steps", 8, "--resume", *flags)
    assert p.returncode == 0, p.stderr
    ca, cb = load_checkpoint(a / "grpo_ckpt.pt"), load_checkpoint(b / "grpo_ckpt.pt")
    for k in ca["policy"]:
        assert torch.equal(ca["policy"][k], cb["policy"][k]), k
    # not the timings, nor step 4's held-out columns: the 4-step run evaluated at its last step
    skip = lambda r, k: k in ("time_s", "tokens_per_s") or (r["step"] == "4" and k.startswith("eval_"))
    strip = lambda rs: [{k: v for k, v in r.items() if not skip(r, k)} for r in rs]
    ra, rb = strip(rows(a / "g.csv")), strip(rows(b / "g.csv"))
    assert ra == rb and any(float(r["env_frac"]) > 0 for r in ra[1:])


BAD_TOOLS = """
from tasks.chain_tool import ChainToolTask


class Bad(ChainToolTask):
    name = "bad_tool"

    def evaluate(self, model, tok, device):  # the failure comes in a training rollout
        return {{"eval_acc": 0.0}}

    def tool(self, prompt, text):
        {body}
"""


@pytest.mark.parametrize(
    "body,says",
    [
        ("raise RuntimeError('boom')", "raised RuntimeError: boom"),
        ("return 42", "returned 42, not a string"),
        ("return 'xyz'", "characters the model's vocabulary lacks"),
    ],
)
def test_bad_tool_stops_in_one_line(chain_tool_sft, tmp_path, body, says):
    """A tool that raises, returns a non-string or unwritable characters stops the run before the update with
    exit 2 and one line naming the task, the prompt and the call; the step-0 row is kept. Bug: a traceback,
    a reply silently dropped or written as garbage, the CSV lost."""
    (tmp_path / "bad.py").write_text(BAD_TOOLS.format(body=body))
    d = fresh(chain_tool_sft, tmp_path / "out")
    ck = load_checkpoint(d / "policy.pth")
    ck["task"] = "bad_tool"  # the same SFT policy, saved for this task's name
    save_checkpoint(ck, d / "policy.pth")
    spec = f"{tmp_path / 'bad.py'}:Bad"
    p = run("train_grpo.py", "--task", spec, "--steps", 3, "--out-dir", d, "--log", d / "g.csv", *TINY, *SMALL)
    assert p.returncode == 2, p.stderr
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in p.stderr, p.stderr
    assert spec in lines[0] and says in lines[0] and "called on prompt '" in lines[0] and "#" in lines[0]
    assert [r["step"] for r in rows(d / "g.csv")] == ["0"]  # written so far: kept
    assert not (d / "grpo_ckpt.pt").exists()  # no update was made with a broken rollout


def test_train_ppo_refuses_a_tool_task(tmp_path):
    """Bug: PPO training on environment tokens (its value, GAE and KL reward know no env mask)."""
    p = run("train_ppo.py", "--task", "chain_tool", "--steps", 1, "--out-dir", tmp_path, *TINY)
    assert p.returncode == 2 and len(p.stderr.strip().splitlines()) == 1
    assert "does not support tools" in p.stderr


def test_the_example_tool_task(tmp_path):
    """examples/calculator_task.py through train_grpo.py (SFT from scratch, 2 steps, the tool columns logged);
    its SFT never trains on the calculator's digits. Bug: the interface the docs show not working."""
    t = load_task("examples/calculator_task.py:CalculatorTask")
    tok = CharTokenizer(t.chars)
    x, y = t.sft_batch(torch.Generator().manual_seed(0), 400, tok)
    call = x == tok.stoi["#"]
    assert call.any() and (y[call] == -1).all()  # y at a "#" predicts the first reply digit: not a target
    p = run("train_grpo.py", "--task", "examples/calculator_task.py:CalculatorTask", "--steps", 2, "--sft-steps", 30,
            *TINY, *SMALL, "--out-dir", tmp_path, "--log", tmp_path / "g.csv")  # fmt: skip
    assert p.returncode == 0, p.stderr
    r = rows(tmp_path / "g.csv")
    assert [x["step"] for x in r] == ["0", "1", "2"] and all(x["env_frac"] != "" for x in r[1:])


def test_chain_error_kinds():
    """tools/chain_errors.py sorts wrong completions by hand-checked kind (the scoping run's three examples
    among them). Bug: a right answer counted wrong, or a kind read from the wrong step."""
    sys.path.insert(0, os.path.join(ROOT, "tools"))
    from chain_errors import chain_error

    p = "9*7+1*3+8="  # 63, 64, 192, 200
    cases = {
        "<9*7#63;63+1#64;64*3#192;192+8#200>200|": None,
        "<9*7#63;+1#64;*3#192;+8#200>200|": None,
        "<9*7#63;+1#64;*3=192;+8#200>201|": "malformed",
        "<9*7#63;+1#64;*4#256;+8#264>264|": "steps",
        "<9*7#63;+1#64;*3#192;+8#200>20|": "answer_copy",
        "200|": None,
        "<9*7#63;63+1=64;64*3#192;192+8#200>200": "truncated",
        "201|": "direct",
        "<9*7#63;63+1#64>3>3>32|": "malformed",
        "<9*7#63;63+1#64;64*3#192>192|": "steps",
        "<9*7#63;63+2#65;65*3#195;195+8#203>203|": "steps",
        "<9*7#63;73+1#74;74*3#222;222+8#230>230|": "carry",
        "<9*7#63;63+1=65;65*3#195;195+8#203>203|": "head_math",
        "<9*7#?;63+1#64;64*3#192;192+8#200>201|": "tool_error",
        "<9*7#63;63+1#64;64*3#192;192+8#200>209|": "answer_copy",
    }
    assert {c: chain_error(p, c) for c in cases} == cases


def test_tool_cost_charges_each_call(chain_tool_sft, tmp_path):
    """--tool-cost c: r_tool_cost is -c x the calls of each completion (the step's mean against tool_calls),
    and mean_r includes it; eval_r stays the task's reward. A task without a tool, or a negative cost, is
    refused in one line. Bugs: the cost not charged, charged per completion instead of per call, or left
    out of the reward the advantages see."""
    d = fresh(chain_tool_sft, tmp_path / "c")
    p = run("train_grpo.py", "--task", "chain_tool", "--steps", 2, "--tool-cost", 0.25, *TINY, *SMALL,
            "--out-dir", d, "--log", d / "g.csv")  # fmt: skip
    assert p.returncode == 0, p.stderr
    r = rows(d / "g.csv")[1:]
    assert any(float(x["tool_calls"]) > 0 for x in r)
    for x in r:
        assert float(x["r_tool_cost"]) == pytest.approx(-0.25 * float(x["tool_calls"]), abs=1e-6)
        parts = float(x["r_exact"]) + 0.1 * float(x["r_format"]) + float(x["r_tool_cost"])
        assert float(x["mean_r"]) == pytest.approx(parts, abs=1e-5)
    for flags, says in ((["--tool-cost", 0.1], "has no tool"), (["--task", "chain_tool", "--tool-cost", -1], ">= 0")):
        p = run("train_grpo.py", *flags, "--steps", 1, "--out-dir", tmp_path / "x", *TINY)
        assert p.returncode == 2 and len(p.stderr.strip().splitlines()) == 1 and says in p.stderr, p.stderr


def test_tool_share_by_step_kind():
    """tools/chain_errors.py's tool_share counts, per operator, the scratchpad steps handed to the calculator
    among the steps that parse. Bug: operators or formats mixed up, a malformed step counted."""
    sys.path.insert(0, os.path.join(ROOT, "tools"))
    from chain_errors import tool_share

    comps = ["<9*7#63;63+1=64;64*3#192;+8#200>200|", "<2*3=6;6+1=7>7|", "7|", "<2*x#6;6+1#7>7|"]
    assert tool_share(comps) == {"*": [2, 3], "+": [2, 4]}
