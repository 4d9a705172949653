"""The toy task: a running sum modulo 10 over a list of digits.

Each step of the worked solution adds the next digit ("3+5=8"), so the number of steps —
and the thinking tokens needed — grows with the list, and every step must look back at the
question for its digit (which is what KV eviction can take away). After the steps the
model restates its result ("Wait 8") whenever budget forcing makes it go on.
"""

from __future__ import annotations

import random

from notallbits.data.choices import LETTERS, shuffle_choices

MIN_DIGITS, MAX_DIGITS = 3, 8
WAIT_LINE = "Wait {answer}\n"
TRAIN_SEED_OFFSET = 1000  # training problems never share a seed with evaluation sets
CHOICE_SHARE = 0.3  # of training problems


def make_problem(rng: random.Random) -> list[int]:
    return [rng.randint(0, 9) for _ in range(rng.randint(MIN_DIGITS, MAX_DIGITS))]


def solve(digits: list[int]) -> tuple[list[str], int]:
    lines, acc = [], digits[0]
    for d in digits[1:]:
        new = (acc + d) % 10
        lines.append(f"{acc}+{d}={new}")
        acc = new
    return lines, acc


def toy_questions(n: int, seed: int, task: str = "math") -> list[dict]:
    """Normalized records; held-out sets use a seed different from training's."""
    rng = random.Random(f"toy:{task}:{seed}")
    out = []
    for i in range(n):
        digits = make_problem(rng)
        _, answer = solve(digits)
        qid = f"toy-{task}-{seed}-{i:04d}"
        question = " ".join(map(str, digits))
        if task == "math":
            out.append({"id": qid, "task": "math", "question": question, "choices": None, "answer": str(answer),
                        "permutation": None})
        else:
            wrong = rng.sample([d for d in range(10) if d != answer], 3)
            choices, letter, perm = shuffle_choices(qid, str(answer), [str(w) for w in wrong], seed)
            out.append({"id": qid, "task": "choice", "question": question, "choices": choices, "answer": letter,
                        "permutation": perm})
    return out


def format_question(record: dict) -> str:
    """The user message: the digits, '3 5 8 2' (+ lettered options for multiple choice)."""
    text = record["question"]
    if record["task"] == "choice":
        text += "\n" + " ".join(f"{LETTERS[i]}){c}" for i, c in enumerate(record["choices"]))
    return text


def worked_answer(record: dict, rng: random.Random) -> tuple[str, str]:
    """(thinking text, final answer) for training: the steps, then 0-3 restatements."""
    digits = [int(x) for x in record["question"].split()]
    lines, answer = solve(digits)
    final = str(answer) if record["task"] == "math" else record["answer"]
    result = f"{answer}" if record["task"] == "math" else f"{answer} {final}"
    thinking = "\n".join(lines) + "\n" + "".join(WAIT_LINE.format(answer=result) for _ in range(rng.randint(0, 2)))
    return thinking, final


def draw_training_problem(rng: random.Random) -> dict:
    """One training problem, as train-toy draws it from its stream."""
    task = "choice" if rng.random() < CHOICE_SHARE else "math"
    return toy_questions(1, rng.randrange(10**9) + TRAIN_SEED_OFFSET, task)[0]


def training_problems(n: int, seed: int = 0) -> list[dict]:
    """The first n problems ``train-toy --seed seed`` trained on, in order (same stream of
    draws: the problem, then its worked answer's restatements)."""
    rng = random.Random(seed)
    out = []
    for i in range(n):
        record = draw_training_problem(rng)
        worked_answer(record, rng)  # consumes the draws training makes here
        out.append({**record, "id": f"toy-train-{seed}-{i:05d}"})
    return out


# dataset loaders (registered by reference in notallbits.data.registry.LOADERS): evaluation
# seeds; training draws from seeds offset by toy.train.TRAIN_SEED_OFFSET
def load_toy_math(spec: dict) -> list[dict]:
    """The toy reasoners' task: a running sum mod 10 of a digit list, answered in \\boxed{}."""
    return toy_questions(spec.get("limit") or 32, spec.get("shuffle_seed", 0), "math")


def load_toy_choice(spec: dict) -> list[dict]:
    """The toy task as four-option multiple choice."""
    return toy_questions(spec.get("limit") or 32, spec.get("shuffle_seed", 0), "choice")


def load_toy_train(spec: dict) -> list[dict]:
    """The toy reasoners' own training problems (the first N that train-toy --seed drew):
    a math set that is never evaluated, for reasoning-domain GPTQ calibration."""
    return training_problems(spec.get("limit") or 128, spec.get("shuffle_seed", 0))
