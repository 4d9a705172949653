"""Process reward models (PRMs) for Best-of-N: ``notallbits verify`` and ``score_steps``.

``families.py``: one entry per verifier family (the Qwen2.5-Math-PRM head, the ActPRM ensemble),
each built, prompted and read as its authors' inference code does; ``step.py``: the verify step
(steps from a trace, the verifier's context, the verify file). Nothing here imports torch at
module level (``rules/common.smk`` reads ``FORMAT_VERSION`` while parsing).
"""

FORMAT_VERSION = 2  # of the verify files; a rule param (2: each verifier scored by its own family)

from notallbits.verify.step import (AGGREGATIONS, SEPARATOR, add_arguments, aggregate, build_tiny,  # noqa: E402
                                    fit, gpus_needed, run, split_steps, verify)

_LOADED: dict = {}


def score_steps(source: str, question: str, steps: list[str], device: str = "cpu", dtype: str = "auto") -> list[float]:
    """One reward per step of ``steps`` (the solution of ``question``), as the checkpoint's
    family's own inference defines it; ``source``: a folder or hub id. The verify step scores
    with the same code (``Verifier.render``, ``Verifier.step_rewards``)."""
    from notallbits import UserError
    from notallbits.verify.families import load

    key = (str(source), device, dtype)
    if key not in _LOADED:
        _LOADED.clear()  # one verifier in memory at a time
        _LOADED[key] = load(str(source), dtype, device)
    verifier = _LOADED[key]
    ids = verifier.render(question, list(steps))
    if len(ids) > verifier.context_tokens:
        raise UserError(f"{source}: {len(ids)} tokens, more than the verifier's {verifier.context_tokens}-token "
                        "context (the verify step keeps the last steps that fit)")
    rewards = verifier.step_rewards([ids], device)[0]
    if len(rewards) != len(steps):
        raise UserError(f"{source}: {len(rewards)} separators for {len(steps)} steps (a step holds the separator?)")
    return rewards


__all__ = ["AGGREGATIONS", "FORMAT_VERSION", "SEPARATOR", "add_arguments", "aggregate", "build_tiny", "fit",
           "gpus_needed", "run", "score_steps", "split_steps", "verify"]
