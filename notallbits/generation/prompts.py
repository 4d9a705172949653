"""The one place where a question becomes the text the model sees."""

from __future__ import annotations

import importlib

from notallbits.data.choices import LETTERS

MATH_INSTRUCTION = "Please reason step by step, and put your final answer within \\boxed{}."
CHOICE_INSTRUCTION = ("Answer with the letter of the correct option. "
                      "Please reason step by step, and put your final letter within \\boxed{}.")


# LiveCodeBench's code-generation prompt (its lm_styles for chat models), in its words
CODE_SYSTEM = ("You are an expert Python programmer. You will be given a question (problem specification) and will "
               "generate a correct Python program that matches the specification and passes all tests.")
CODE_WITH_STARTER = ("### Format: You will use the following starter code to write the solution to the problem and "
                     "enclose your code within delimiters.\n```python\n{starter}\n```\n\n")
CODE_STDIN = ("### Format: Read the inputs from stdin solve the problem and write the answer to stdout (do not directly "
              "test on the sample inputs). Enclose your code within delimiters as follows. Ensure that when the python "
              "program runs, it reads the inputs, runs the algorithm and writes output to STDOUT.\n"
              "```python\n# YOUR CODE HERE\n```\n\n")


def format_code_question(record: dict) -> str:
    starter = record.get("starter_code") or ""
    fmt = CODE_WITH_STARTER.format(starter=starter) if starter.strip() else CODE_STDIN
    return (f"{CODE_SYSTEM}\n\n### Question:\n{record['question']}\n\n{fmt}"
            "### Answer: (use the provided format with backticks)\n\n")


def format_question(record: dict) -> str:
    if record["task"] == "code":
        return format_code_question(record)
    if record["task"] == "choice":
        options = "\n".join(f"{LETTERS[i]}) {c}" for i, c in enumerate(record["choices"]))
        return f"{record['question']}\n\n{options}\n\n{CHOICE_INSTRUCTION}"
    return f"{record['question']}\n\n{MATH_INSTRUCTION}"


# prompt styles: how a question becomes the user message ("module:function" entries are imported
# when used, so a fixture such as the toy task plugs in without this module knowing it)
PROMPT_STYLES = {
    "default": format_question,
    "toy": "notallbits.toy.task:format_question",
}


def user_message(record: dict, style: str = "default") -> str:
    if style not in PROMPT_STYLES:
        from notallbits import UserError

        raise UserError(f"unknown prompt style {style!r} (known: {', '.join(PROMPT_STYLES)})")
    fmt = PROMPT_STYLES[style]
    if isinstance(fmt, str):
        module, name = fmt.split(":")
        fmt = getattr(importlib.import_module(module), name)
    return fmt(record)


def build_prompt(tokenizer, record: dict, style: str = "default") -> str:
    """Chat template with thinking on, ending inside an open ``<think>`` block.

    Qwen3's template leaves ``<think>\\n`` to the model; we write it ourselves so that the
    thinking budget counts from the first reasoning token.
    """
    content = user_message(record, style)
    text = tokenizer.apply_chat_template([{"role": "user", "content": content}], tokenize=False,
                                         add_generation_prompt=True, enable_thinking=True)
    if not text.rstrip().endswith("<think>"):
        text += "<think>\n"
    elif not text.endswith("\n"):
        text += "\n"
    return text
