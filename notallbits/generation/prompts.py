"""The one place where a question becomes the text the model sees."""

from __future__ import annotations

from notallbits.data.registry import LETTERS

MATH_INSTRUCTION = "Please reason step by step, and put your final answer within \\boxed{}."
CHOICE_INSTRUCTION = ("Answer with the letter of the correct option. "
                      "Please reason step by step, and put your final letter within \\boxed{}.")


def format_question(record: dict) -> str:
    if record["task"] == "choice":
        options = "\n".join(f"{LETTERS[i]}) {c}" for i, c in enumerate(record["choices"]))
        return f"{record['question']}\n\n{options}\n\n{CHOICE_INSTRUCTION}"
    return f"{record['question']}\n\n{MATH_INSTRUCTION}"


def build_prompt(tokenizer, record: dict, style: str = "default") -> str:
    """Chat template with thinking on, ending inside an open ``<think>`` block.

    Qwen3's template leaves ``<think>\\n`` to the model; we write it ourselves so that the
    thinking budget counts from the first reasoning token.
    """
    if style == "toy":
        from notallbits.toy.task import format_question as toy_format

        content = toy_format(record)
    else:
        content = format_question(record)
    text = tokenizer.apply_chat_template([{"role": "user", "content": content}], tokenize=False,
                                         add_generation_prompt=True, enable_thinking=True)
    if not text.rstrip().endswith("<think>"):
        text += "<think>\n"
    elif not text.endswith("\n"):
        text += "\n"
    return text
