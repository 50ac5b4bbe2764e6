"""tasks/: the built-in tasks keep their numbers, load_task's four forms, the JSONL task's split and
rewards by hand, one-line TaskErrors naming file and line, total_reward's checks, and the shared rollout
helper (padded prompts complete exactly as they would alone)."""

import argparse
import json
import textwrap

import pytest
import torch
from conftest import run

from model import END, GPT, CharTokenizer, GPTConfig
from tasks import (
    TASKS,
    TaskError,
    add_task_args,
    check_scratch,
    complete,
    evaluate_greedy,
    load_task,
    sft_batch_from_examples,
    total_reward,
)
from tasks.arithmetic import ArithmeticTask, exact_match, well_formed
from tasks.shakespeare import SHAKESPEARE, ShakespeareTask


def tiny_gpt(tok, block_size, seed=0):
    """A random GPT with weights ~ N(0, 0.1), larger than GPT's init, so that greedy completions differ
    from prompt to prompt and some stop early."""
    torch.manual_seed(seed)
    model = GPT(GPTConfig(block_size=block_size, vocab_size=tok.vocab_size, n_layer=1, n_head=2, n_embd=32))
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0, 0.1)
    return model


def write(path, text):
    path.write_text(textwrap.dedent(text))
    return path


def jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


# -----------------------------------------------------------------------------
# the built-in tasks keep their numbers


def test_arithmetic_split_and_prompts_unchanged():
    t = ArithmeticTask()
    assert t.heldout[:3] == ["84+25=", "27+67=", "28+98="] and t.train[:3] == ["58+58=", "10+93=", "23+50="]
    assert len(t.heldout) == 500 and len(t.train) == 7600 and not set(t.heldout) & set(t.train)
    assert len(set(t.heldout) | set(t.train)) == 8100
    assert t.sample_prompts(torch.Generator().manual_seed(1), 3) == ["64+59=", "26+46=", "17+29="]


def test_arithmetic_sft_batch_by_hand():
    """Seed 1 draws 64+59= (answer 123) and 26+46= (72): the shorter row is padded with the end token (12)."""
    t = ArithmeticTask()
    tok = CharTokenizer(t.chars)  # "+0123456789=": "+" 0, digit d is d+1, "=" 11, end 12
    x, y = t.sft_batch(torch.Generator().manual_seed(1), 2, tok)
    assert x.tolist() == [[7, 5, 0, 6, 10, 11, 2, 3, 4], [3, 7, 0, 5, 7, 11, 8, 3, 12]]
    assert y.tolist() == [[-1] * 5 + [2, 3, 4, 12], [-1] * 5 + [8, 3, 12, -1]]
    assert x.dtype == y.dtype == torch.long


def old_arithmetic_sft_batch(task, g, batch_size, tok):
    """The SFT batch as the tasks built it before sft_examples (a second implementation)."""
    prompts = task.sample_prompts(g, batch_size)
    rows = [tok.encode(p + str(eval(p[:-1]))) + [tok.eos_id] for p in prompts]
    T = max(len(r) for r in rows)
    x = torch.full((batch_size, T - 1), tok.eos_id, dtype=torch.long)
    y = torch.full((batch_size, T - 1), -1, dtype=torch.long)
    for i, r in enumerate(rows):
        x[i, : len(r) - 1] = torch.tensor(r[:-1])
        y[i, 5 : len(r) - 1] = torch.tensor(r[6:])
    return x, y


def test_arithmetic_sft_batches_bitwise_as_before():
    t = ArithmeticTask()
    tok = CharTokenizer(t.chars)
    g_new, g_old = torch.Generator().manual_seed(3), torch.Generator().manual_seed(3)
    for _ in range(5):  # consecutive draws: the generator is consumed the same way
        (x, y), (x0, y0) = t.sft_batch(g_new, 64, tok), old_arithmetic_sft_batch(t, g_old, 64, tok)
        assert torch.equal(x, x0) and torch.equal(y, y0)


def test_arithmetic_rewards_by_hand():
    p = ["37+48="] * 5
    c = ["85|", "85", "86|", "1234|", "|"]
    assert exact_match(p, c) == [1.0, 0.0, 0.0, 0.0, 0.0]
    assert well_formed(p, c) == [1.0, 0.0, 1.0, 0.0, 0.0]
    totals, parts = total_reward(ArithmeticTask.reward_funcs, p, c)
    assert totals == [1.1, 0.0, 0.1, 0.0, 0.0] and parts["format"] == [1.0, 0.0, 1.0, 0.0, 0.0]


def test_arithmetic_evaluate_matches_a_direct_greedy_decode():
    """evaluate (now through complete/evaluate_greedy) equals the old code: one unpadded generate call."""
    t = ArithmeticTask()
    tok = CharTokenizer(t.chars)
    model = tiny_gpt(tok, t.block_size)
    for kw, prompts in [({"n": 50}, t.heldout[:50]), ({"split": "train"}, t.train[:500])]:
        idx = torch.tensor([tok.encode(p) for p in prompts])
        out, _ = model.generate(idx, t.max_new_tokens, temperature=0, eos_id=tok.eos_id)
        comps = [tok.decode_completion(r) for r in out.tolist()]
        want = {
            "eval_acc": sum(exact_match(prompts, comps)) / len(prompts),
            "eval_r": sum(total_reward(t.reward_funcs, prompts, comps)[0]) / len(prompts),
        }
        got = t.evaluate(model, tok, "cpu", **kw)
        assert got == want and list(got) == ["eval_acc", "eval_r"]
    assert t.sft_progress(model, tok, "cpu") == t.evaluate(model, tok, "cpu", split="train")["eval_acc"]


def test_shakespeare_unchanged():
    t = ShakespeareTask()
    assert t.heldout[0] == "ROSPERO:\nO, a cherubim\nThou wast" and len(t.heldout) == 128
    assert t.sample_prompts(torch.Generator().manual_seed(0), 1) == ["tions of Poor Anne,\nWife to thy "]
    tok = CharTokenizer(t.chars)
    model = tiny_gpt(tok, t.block_size)
    prompts = t.heldout[:16]
    u = torch.rand(16, 32, generator=torch.Generator().manual_seed(0))
    out, _ = model.generate(torch.tensor([tok.encode(p) for p in prompts]), 32, temperature=0.7, uniforms=u)
    want = sum(total_reward(t.reward_funcs, prompts, [tok.decode(r) for r in out.tolist()])[0]) / 16
    assert t.evaluate(model, tok, "cpu", n=16, temperature=0.7) == {"eval_r": want}
    assert t.correct is None and t.sft_examples is None and t.sft_progress is None


def test_builtin_names_load_the_builtin_classes(tmp_path):
    assert type(load_task("arithmetic")) is ArithmeticTask and set(TASKS) == {
        "arithmetic",
        "shakespeare",
        "chain",
        "chain_tool",
    }
    text = write(tmp_path / "words.txt", "love and peace, " * 200)
    t = load_task("shakespeare", data=str(text))
    assert type(t) is ShakespeareTask and t.train_text.startswith("love and peace")
    with pytest.raises(TaskError, match="nothing.txt"):
        load_task("shakespeare", data=str(tmp_path / "nothing.txt"))
    assert load_task("shakespeare").heldout == ShakespeareTask(SHAKESPEARE).heldout
    for name in TASKS:  # the built-ins are complete without with_defaults, scratch training included
        check_scratch(load_task(name), name)


# -----------------------------------------------------------------------------
# load_task: a class in a file, a module, the example

USER_TASK = """
    import torch

    def exact(prompts, completions):
        return [float(c == p.upper() + "|") for p, c in zip(prompts, completions)]

    class Upper:
        name = "upper"
        max_new_tokens = 4
        reward_funcs = [("exact", exact, 1.0)]
        heldout = ["ab", "c"]

        def __init__(self, data_path=None):
            self.data_path = data_path

        def sample_prompts(self, g, n):
            return ["abc"[: 1 + i] for i in torch.randint(3, (n,), generator=g).tolist()]

        def sft_examples(self, g, n):
            return [(p, p.upper() + "|") for p in self.sample_prompts(g, n)]

    upper = Upper()
"""


def test_load_a_class_from_a_file_fills_the_defaults(tmp_path):
    path = write(tmp_path / "my_task.py", USER_TASK)
    t = load_task(f"{path}:Upper")
    assert t.name == "upper" and t.data_path is None
    assert (t.uses_eos, t.rl_steps, t.correct, t.chars, t.sft_progress) == (True, 200, None, None, None)
    assert t.block_size == 3 + 4  # the longest prompt ("abc", sampled) + max_new_tokens
    tok = CharTokenizer("abcABC")
    x, y = t.sft_batch(torch.Generator().manual_seed(0), 8, tok)  # built from sft_examples
    x0, y0 = sft_batch_from_examples(t.sft_examples(torch.Generator().manual_seed(0), 8), tok)
    assert torch.equal(x, x0) and torch.equal(y, y0)
    assert set(t.evaluate(tiny_gpt(tok, t.block_size), tok, "cpu")) == {"eval_r"}  # no `correct`: no eval_acc
    assert load_task(f"{path}:Upper", data="d.txt").data_path == "d.txt"
    assert load_task(f"{path}:upper").name == "upper"  # an object instead of a class
    with pytest.raises(TaskError, match="upper is an object"):
        load_task(f"{path}:upper", data="d.txt")


def test_load_a_class_from_a_module(tmp_path, monkeypatch):
    write(tmp_path / "nanogrpo_test_user_tasks.py", USER_TASK)
    monkeypatch.syspath_prepend(str(tmp_path))
    assert load_task("nanogrpo_test_user_tasks:Upper").heldout == ["ab", "c"]
    with pytest.raises(TaskError, match="no module named 'nanogrpo_no_such_module'"):
        load_task("nanogrpo_no_such_module:Upper")


def test_the_example_reverse_task():
    t = load_task("examples/reverse_task.py:ReverseTask")
    assert t.name == "reverse" and len(t.heldout) == 200 and not set(t.heldout) & set(t.train)
    check_scratch(t, "reverse")
    p, c = ["abc>"] * 4, ["cba|", "cba", "abc|", "|"]
    assert total_reward(t.reward_funcs, p, c) == (
        [1.1, 0.0, 0.1, 0.0],
        {"exact": [1.0, 0, 0, 0], "format": [1, 0, 1, 0]},
    )
    assert t.block_size == 6 + 7
    tok = CharTokenizer(t.chars)
    out = t.evaluate(tiny_gpt(tok, t.block_size), tok, "cpu")
    assert set(out) == {"eval_acc", "eval_r"} and 0 <= out["eval_acc"] <= 1


def test_sft_batch_from_examples_by_hand():
    tok = CharTokenizer("abcdef>")  # ">" 0, a-f 1-6, end 7
    x, y = sft_batch_from_examples([("ab>", "ba|"), ("abc>", "cba|"), ("a>", "ab")], tok)
    assert x.tolist() == [[1, 2, 0, 2, 1, 7, 7], [1, 2, 3, 0, 3, 2, 1], [1, 0, 1, 7, 7, 7, 7]]
    assert y.tolist() == [[-1, -1, 2, 1, 7, -1, -1], [-1, -1, -1, 3, 2, 1, 7], [-1, 1, 2, -1, -1, -1, -1]]


# -----------------------------------------------------------------------------
# the JSONL task


def rows_ab(n):
    return [{"prompt": f"q{i}?", "answer": str(i)} for i in range(n)]


@pytest.mark.parametrize("n, k", [(2, 1), (25, 2), (99, 9), (6000, 500)])
def test_jsonl_split_is_fixed_disjoint_and_sized(tmp_path, n, k):
    path = jsonl(tmp_path / "qa.jsonl", rows_ab(n))
    t, t2 = load_task(f"jsonl:{path}"), load_task(f"jsonl:{path}")
    assert len(t.heldout) == k and len(t.train) == n - k
    assert t.heldout == t2.heldout and t.train == t2.train  # seed 1234, never --seed
    assert not set(t.heldout) & set(t.train) and len(set(t.heldout) | set(t.train)) == n
    if n == 25:  # the same prompts as the documented rule: torch.randperm(25) with seed 1234, first 2
        perm = torch.randperm(25, generator=torch.Generator().manual_seed(1234)).tolist()
        assert t.heldout == [f"q{i}?" for i in sorted(perm[:2])]


def test_jsonl_split_is_over_distinct_prompts(tmp_path):
    """A row repeated in the file is one prompt: it cannot land in both the training and held-out sets."""
    path = jsonl(tmp_path / "qa.jsonl", rows_ab(30) * 3)
    t = load_task(f"jsonl:{path}")
    assert len(t.heldout) == 3 and len(t.train) == 27 and not set(t.heldout) & set(t.train)


def test_jsonl_with_a_heldout_file(tmp_path):
    a = jsonl(tmp_path / "train.jsonl", rows_ab(5))
    b = tmp_path / "dev.jsonl"
    b.write_text('\n{"prompt": "q9?", "answer": "9", "note": "extra keys are ignored"}\n\n')
    t = load_task(f"jsonl:{a},{b}")
    assert t.train == ["q0?", "q1?", "q2?", "q3?", "q4?"] and t.heldout == ["q9?"]
    assert t.name.startswith("jsonl_train_") and t.max_new_tokens == 1 + 3 and t.block_size == 3 + 4
    assert t.chars == "012349?q"  # q0?..q4? and q9?
    assert t.sample_prompts(torch.Generator().manual_seed(0), 3) == [
        t.train[i] for i in torch.randint(5, (3,), generator=torch.Generator().manual_seed(0)).tolist()
    ]
    assert t.sft_examples(torch.Generator().manual_seed(0), 1)[0][1].endswith(END)


def test_jsonl_name_is_unique_to_its_file(tmp_path):
    """Two train.jsonl in different folders must not share out/<name> (its policy.pth is trained on the first
    file's characters); the same file, named by another path, keeps its name."""
    (tmp_path / "a").mkdir(), (tmp_path / "b").mkdir()
    a = jsonl(tmp_path / "a" / "train.jsonl", rows_ab(20))
    b = jsonl(tmp_path / "b" / "train.jsonl", rows_ab(20))
    na, nb = load_task(f"jsonl:{a}").name, load_task(f"jsonl:{b}").name
    assert na != nb and na.startswith("jsonl_train_") and nb.startswith("jsonl_train_")
    assert load_task(f"jsonl:{tmp_path}/a/../a/train.jsonl").name == na
    c = jsonl(tmp_path / "dev.jsonl", [{"prompt": "z?", "answer": "1"}])
    assert load_task(f"jsonl:{a},{c}").name not in (na, nb)  # a held-out file: another split, another name


def test_jsonl_heldout_prompts_are_not_trained_on(tmp_path, capsys):
    """A prompt in both files is held out only (eval_acc must not count a trained prompt), and the count is said."""
    a = jsonl(tmp_path / "train.jsonl", rows_ab(6))
    b = jsonl(tmp_path / "dev.jsonl", rows_ab(6)[4:] + [{"prompt": "q9?", "answer": "9"}])
    t = load_task(f"jsonl:{a},{b}")
    assert t.train == ["q0?", "q1?", "q2?", "q3?"] and t.heldout == ["q4?", "q5?", "q9?"] and t.overlap == 2
    assert "2 prompts are also in" in capsys.readouterr().out
    with pytest.raises(TaskError, match="nothing to train on"):
        load_task(f"jsonl:{b},{b}")


def test_data_is_refused_where_nothing_reads_it(tmp_path):
    """--data for a built-in task that reads no file, or for a class without data_path, is an error, not
    silently ignored (nor a TypeError traceback)."""
    for name in ("arithmetic", "chain"):
        with pytest.raises(TaskError, match=f"--data does not apply to --task {name}"):
            load_task(name, data=str(tmp_path / "x.txt"))
    path = write(tmp_path / "no_data.py", USER_TASK.replace("def __init__(self, data_path=None):", "def __init__(self):")
                 .replace("self.data_path = data_path", "pass"))  # fmt: skip
    with pytest.raises(TaskError, match="takes no data_path") as e:
        load_task(f"{path}:Upper", data="d.txt")
    assert "\n" not in str(e.value)
    kw = write(tmp_path / "kw_task.py", USER_TASK.replace("def __init__(self, data_path=None):", "def __init__(self, **kw):")
               .replace("self.data_path = data_path", "self.data_path = kw.get('data_path')"))  # fmt: skip
    assert load_task(f"{kw}:Upper", data="d.txt").data_path == "d.txt"


def test_jsonl_rewards_by_hand(tmp_path):
    path = jsonl(tmp_path / "qa.jsonl", [{"prompt": "6*7=", "answer": " 42 "}, {"prompt": "1+1=", "answer": "2"}])
    t = load_task(f"jsonl:{path}")
    p = ["6*7="] * 7 + ["1+1="]
    c = ["42|", " 42\n|", "42", "42x", "43|", "|", "  |", "2|"]  # "42", "42x": cut off at max_new_tokens
    assert t.exact(p, c) == [1, 1, 0, 0, 0, 0, 0, 1]  # stopped, and equal once stripped
    assert t.format(p, c) == [1, 1, 0, 0, 1, 0, 0, 1]  # stopped with some text
    assert total_reward(t.reward_funcs, p, c)[0] == [1.1, 1.1, 0.0, 0.0, 0.1, 0.0, 0.0, 1.1]
    assert t.correct(p, c) == t.exact(p, c)


# -----------------------------------------------------------------------------
# bad input: one-line TaskError naming the file (and line)

GOOD_CLASS = """
    class T:
        name = "t"
        max_new_tokens = 3
        reward_funcs = [("r", lambda p, c: [0.0] * len(c), 1.0)]
        heldout = ["a"]
        def sample_prompts(self, g, n):
            return ["a"] * n
"""


def bad_class(replace, by):
    assert replace in GOOD_CLASS
    return GOOD_CLASS.replace(replace, by)


@pytest.mark.parametrize(
    "source, needle",
    [
        (bad_class('        heldout = ["a"]\n', ""), "missing the required attribute(s) heldout"),
        (bad_class('        name = "t"\n        max_new_tokens = 3\n', ""), "name, max_new_tokens"),
        (bad_class("max_new_tokens = 3", "max_new_tokens = 0"), "max_new_tokens must be a positive int"),
        (bad_class("max_new_tokens = 3", "max_new_tokens = '3'"), "max_new_tokens must be a positive int"),
        (bad_class("max_new_tokens = 3", "max_new_tokens = 3\n        sft_steps = 0"), "sft_steps must be a positive"),
        (bad_class('name = "t"', 'name = "a/b"'), "name must be"),
        (bad_class("1.0)]", "1.0, 2)]"), "reward_funcs[0] must be"),
        (bad_class("1.0)]", "'heavy')]"), "reward_funcs[0] must be"),
        (bad_class("1.0)]", "1.0)] * 2"), "names must differ"),
        (bad_class("reward_funcs = [", "reward_funcs = []  # ["), "reward_funcs must be a non-empty"),
        (bad_class('heldout = ["a"]', "heldout = []"), "heldout must be"),
        (bad_class('heldout = ["a"]', 'heldout = "abc"'), "heldout must be"),
        (bad_class('["a"] * n', '"a"'), "sample_prompts(g, 2) must return"),
        (bad_class("[0.0] * len(c)", "[0.0]"), "reward function 'r'"),
        (bad_class("[0.0] * len(c)", "[float('nan')] * len(c)"), "reward function 'r'"),
        (bad_class("max_new_tokens = 3", "max_new_tokens = 3\n        uses_eos = 1"), "uses_eos must be"),
        (bad_class("max_new_tokens = 3", "max_new_tokens = 3\n        chars = 'ab|'"), "chars must be"),
        (bad_class("max_new_tokens = 3", "max_new_tokens = 3\n        correct = 1.0"), "correct must be callable"),
    ],
)
def test_bad_task_class(tmp_path, source, needle):
    path = write(tmp_path / "bad_task.py", source)
    with pytest.raises(TaskError) as e:
        load_task(f"{path}:T")
    msg = str(e.value)
    assert "\n" not in msg and needle in msg
    if "reward function" not in msg:  # check_task's errors name file:line of the class
        assert msg.startswith(f"{path}:2: T: "), msg


def test_bad_task_files(tmp_path):
    def err(spec):
        with pytest.raises(TaskError) as e:
            load_task(spec)
        assert "\n" not in str(e.value)
        return str(e.value)

    assert err(f"{tmp_path}/none.py:T") == f"{tmp_path}/none.py: file not found"
    assert err(f"{write(tmp_path / 'task.txt', 'x = 1')}:T") == f"{tmp_path}/task.txt: not a Python file (name it *.py)"
    broken = write(tmp_path / "broken.py", "x = 1\n\ndef f(:\n    pass\n")
    assert err(f"{broken}:T").startswith(f"{broken}:3: syntax error")
    two = write(tmp_path / "two.py", "class A:\n    pass\n\nclass B:\n    pass\n")
    assert err(f"{two}:C") == f"{two}: no class or object named 'C' (classes there: A, B)"
    assert "unknown --task 'arith'" in err("arith") and "jsonl:" in err("arith")
    assert "expected jsonl:train.jsonl" in err("jsonl:a.jsonl,b.jsonl,c.jsonl")


@pytest.mark.parametrize(
    "content, line, needle",
    [
        ('{"prompt": "a", "answer": "b"}\n{"prompt": "c", "answer": }\n', 2, "bad JSON"),
        ('{"prompt": "a", "answer": "b"}\n\n{"prompt": "c"}\n', 3, 'no "answer"'),
        ('{"answer": "b"}\n', 1, 'no "prompt"'),
        ('{"prompt": "a", "answer": 7}\n', 1, '"answer" is int 7, not a string'),
        ('{"prompt": "a", "answer": "b|c"}\n', 1, "reserved for the end token"),
        ('{"prompt": "", "answer": "b"}\n', 1, 'empty "prompt"'),
        ('["a", "b"]\n', 1, "a row is an object"),
        ('{"prompt": "a", "answer": "b"}\n{"prompt": "a", "answer": "c"}\n', 2, "has another answer at"),
    ],
)
def test_bad_jsonl_rows(tmp_path, content, line, needle):
    path = tmp_path / "d.jsonl"
    path.write_text(content)
    with pytest.raises(TaskError) as e:
        load_task(f"jsonl:{path}")
    msg = str(e.value)
    assert msg.startswith(f"{path}:{line}: ") and needle in msg and "\n" not in msg, msg


def test_bad_jsonl_files(tmp_path):
    def err(spec):
        with pytest.raises(TaskError) as e:
            load_task(spec)
        assert "\n" not in str(e.value)
        return str(e.value)

    empty, one = tmp_path / "empty.jsonl", jsonl(tmp_path / "one.jsonl", rows_ab(1))
    empty.write_text("\n\n")
    assert err(f"jsonl:{empty}") == f'{empty}: no rows (a row is a line {{"prompt": str, "answer": str}})'
    assert err(f"jsonl:{one}").startswith(f"{one}: 1 distinct prompt: at least 2")
    assert err(f"jsonl:{one},{empty}").startswith(f"{empty}: no rows")
    assert err(f"jsonl:{tmp_path}/none.jsonl") == f"{tmp_path}/none.jsonl: file not found"
    latin = tmp_path / "latin.jsonl"
    latin.write_bytes(b'{"prompt": "a", "answer": "b"}\n{"prompt": "caf\xe9", "answer": "b"}\n')
    assert err(f"jsonl:{latin}").startswith(f"{latin}:2: not UTF-8")
    with pytest.raises(TaskError, match="--data does not apply"):
        load_task(f"jsonl:{one}", data="x")


def test_check_scratch(tmp_path):
    path = write(tmp_path / "u.py", USER_TASK)
    t = load_task(f"{path}:Upper")
    with pytest.raises(TaskError, match="needs chars"):
        check_scratch(t, "u.py")
    t.chars = "abcAB"
    with pytest.raises(TaskError, match="'C' are missing from chars"):  # the completion of "abc"
        check_scratch(t, "u.py")
    t.chars = "abcABC"
    check_scratch(t, "u.py")
    t.sft_batch = None
    with pytest.raises(TaskError, match="needs SFT data"):
        check_scratch(t, "u.py")


# -----------------------------------------------------------------------------
# total_reward's checks


def test_total_reward_weights_and_checks():
    ok = ("ok", lambda p, c: [1, True, 0.5], 2.0)  # ints and bools are numbers
    half = ("half", lambda p, c: [0.25] * 3, -1.0)
    assert total_reward([ok, half], ["p"] * 3, ["a", "b", "c"]) == (
        [1.75, 1.75, 0.75],
        {"ok": [1, True, 0.5], "half": [0.25] * 3},
    )

    def short(prompts, completions):
        return [1.0]

    for fn in [
        short,
        lambda p, c: torch.ones(len(c)),
        lambda p, c: [1.0, "1", 1.0],
        lambda p, c: [1.0, float("inf"), 0],
    ]:
        with pytest.raises(TaskError) as e:
            total_reward([ok, ("bad", fn, 1.0)], ["p"] * 3, ["a", "b", "c"])
        assert str(e.value).startswith("reward function 'bad' (") and "3 finite numbers" in str(e.value)
    with pytest.raises(
        TaskError, match=r"'bad' \(test_total_reward_weights_and_checks.<locals>.short at .*test_tasks.py:\d+\)"
    ):
        total_reward([("bad", short, 1.0)], ["p"] * 3, ["a", "b", "c"])


# -----------------------------------------------------------------------------
# the shared rollout helper


def test_complete_pads_prompts_of_different_lengths_exactly():
    """A batch of prompts of different lengths gives each prompt what it gets alone: texts, tokens, masks."""
    tok = CharTokenizer("abcdef>")
    model = tiny_gpt(tok, 16)
    prompts = ["ab>", "abcde>", "c>", "fedcb>"]
    u = torch.rand(4, 6, generator=torch.Generator().manual_seed(0))
    for kw in [{"temperature": 1.0, "uniforms": u}, {}]:  # sampled with fixed numbers, and greedy
        texts, seq, pmask, mask, _ = complete(model, tok, prompts, 6, uses_eos=True, **kw)
        assert len(set(texts)) > 1 and any(t.endswith(END) for t in texts) and any(len(t) == 6 for t in texts)
        assert seq.shape == (4, 6 + 6) and pmask.tolist()[0] == [0, 0, 0, 1, 1, 1] and pmask[1].all()
        for i, p in enumerate(prompts):
            kw1 = {**kw, "uniforms": u[i : i + 1]} if kw else {}
            t1, s1, _, m1, _ = complete(model, tok, [p], 6, uses_eos=True, **kw1)
            assert texts[i] == t1[0] and torch.equal(seq[i, -6:], s1[0, -6:]) and torch.equal(mask[i], m1[0])
            ids = seq[i, -6:].tolist()
            n = ids.index(tok.eos_id) + 1 if tok.eos_id in ids else 6
            assert mask[i].tolist() == [1.0] * n + [0.0] * (6 - n)
    texts, _, _, mask, _ = complete(model, tok, prompts, 6, uses_eos=False, temperature=1.0, uniforms=u)
    assert all(len(t) == 6 for t in texts) and mask.sum() == 24


def test_default_evaluate_on_prompts_of_different_lengths(tmp_path):
    rows = [{"prompt": w + ">", "answer": w[::-1]} for w in ["ab", "bca", "c", "abc"]]
    path = jsonl(tmp_path / "rev.jsonl", rows + [{"prompt": "cab>", "answer": "bac"}])
    t = load_task(f"jsonl:{path},{jsonl(tmp_path / 'dev.jsonl', rows)}")  # held out: the four rows
    tok = CharTokenizer(t.chars)
    model = tiny_gpt(tok, t.block_size, seed=2)
    torch.manual_seed(0)  # generate draws (unused) random numbers for greedy decoding too
    got = t.evaluate(model, tok, "cpu")
    alone = [complete(model, tok, [p], t.max_new_tokens, uses_eos=True)[0][0] for p in t.heldout]
    assert got == {
        "eval_acc": sum(t.exact(t.heldout, alone)) / 4,
        "eval_r": sum(total_reward(t.reward_funcs, t.heldout, alone)[0]) / 4,
    }
    assert len(set(alone)) > 1  # the prompts do get different completions
    one = evaluate_greedy(t, model, tok, "cpu", t.heldout[1:2])  # prompts= picks the prompts
    assert one == {
        "eval_acc": t.exact(t.heldout[1:2], alone[1:2])[0],
        "eval_r": total_reward(t.reward_funcs, t.heldout[1:2], alone[1:2])[0][0],
    }


# -----------------------------------------------------------------------------
# the drivers


def test_add_task_args():
    parser = argparse.ArgumentParser()
    add_task_args(parser)
    assert parser.parse_args([]).task == "arithmetic"
    assert parser.parse_args(["--task", "jsonl:x.jsonl"]).task == "jsonl:x.jsonl"
    assert "jsonl:" in parser.format_help() and ".py:Class" in parser.format_help()


def test_driver_exits_2_with_one_line_naming_the_file(tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"prompt": "a", "answer": "b"}\n{"prompt": 3, "answer": "b"}\n')
    p = run("train_grpo.py", "--task", f"jsonl:{bad}", "--steps", 1, "--out-dir", tmp_path / "out", timeout=120)
    assert p.returncode == 2, p.stderr
    assert len(p.stderr.strip().splitlines()) == 1 and f"{bad}:2:" in p.stderr, p.stderr


def test_example_task_trains_from_scratch(tmp_path):
    """examples/reverse_task.py through train_grpo.py: SFT from scratch, 2 GRPO steps, eval_acc logged."""
    p = run(
        "train_grpo.py", "--task", "examples/reverse_task.py:ReverseTask", "--steps", 2, "--sft-steps", 30,
        "--n-layer", 1, "--n-head", 2, "--n-embd", 32, "--batch-size", 4, "--group-size", 4, "--eval-every", 2,
        "--out-dir", tmp_path, "--log", tmp_path / "g.csv", "--no-progress",
    )  # fmt: skip
    assert p.returncode == 0, p.stderr
    assert "held-out reverse" in p.stdout and "eval_acc" in (tmp_path / "g.csv").read_text().splitlines()[0]


LETTERS_TASK = """
    from tasks import evaluate_greedy

    def exact(prompts, completions):
        return [float(c == p + "|") for p, c in zip(prompts, completions)]

    class Letters:
        name = "letters"
        chars = "CHARS"
        max_new_tokens = 8
        reward_funcs = [("exact", exact, 1.0)]
        def __init__(self):
            self.heldout = [self.chars[:2], self.chars[2:4]]

        def sample_prompts(self, g, n):
            return [self.chars[i : i + 2] for i in torch.randint(10, (n,), generator=g).tolist()]

        def sft_examples(self, g, n):
            return [(p, p + "|") for p in self.sample_prompts(g, n)]

        def evaluate(self, model, tok, device):  # the horizon the evaluation decoded with, as a column
            return {**evaluate_greedy(self, model, tok, device), "eval_horizon": float(self.max_new_tokens)}
"""
LETTERS_TASK = "import torch\n" + textwrap.dedent(LETTERS_TASK)


def test_one_horizon_and_a_policy_of_other_characters_refused(tmp_path):
    """Issue 18: --max-new-tokens is the held-out evaluation's horizon too (the task's evaluate reads it), and a
    policy.pth of the same task name and shape but trained on other characters exits 2 in one line."""
    path = tmp_path / "letters.py"
    path.write_text(LETTERS_TASK.replace("CHARS", "abcdefghijkl"))
    common = ["--task", f"{path}:Letters", "--sft-steps", 5, "--steps", 1, "--batch-size", 2, "--group-size", 2]
    common += ["--n-layer", 1, "--n-head", 2, "--n-embd", 32, "--out-dir", tmp_path / "out", "--no-progress"]
    p = run("train_grpo.py", *common, "--max-new-tokens", 3, "--log", tmp_path / "g.csv", timeout=120)
    assert p.returncode == 0, p.stderr
    step0 = (tmp_path / "g.csv").read_text().splitlines()
    col = step0[0].split(",").index("eval_horizon")
    assert float(step0[1].split(",")[col]) == 3.0  # not the task's 8
    path.write_text(LETTERS_TASK.replace("CHARS", "mnopqrstuvwx"))  # as many characters: the same shapes
    p = run("train_grpo.py", *common, "--log", tmp_path / "g2.csv", timeout=120)
    assert p.returncode == 2 and "was trained on the characters" in p.stderr, p.stderr
    assert len(p.stderr.strip().splitlines()) == 1


def test_sft_steps_default_is_the_task_s():
    """--sft-steps given wins (0 included); else the task's sft_steps; else 1500. Bug: the flag's None
    reaching range(), or a task's default ignored."""
    from utils.sft import sft_steps

    class T:
        sft_steps = 7

    assert sft_steps(T(), argparse.Namespace(sft_steps=None)) == 7
    assert sft_steps(T(), argparse.Namespace(sft_steps=0)) == 0
    assert sft_steps(object(), argparse.Namespace(sft_steps=None)) == 1500


def test_negative_sft_steps_is_refused():
    """--sft-steps -3 used to train nothing and save an untrained policy as if it were the SFT one; now argparse
    refuses it (exit 2) before any work. Bug: a plain int type."""
    p = run("train_grpo.py", "--task", "chain", "--sft-steps", "-3", "--steps", 1)
    assert p.returncode == 2 and "--sft-steps: must be >= 0" in p.stderr
