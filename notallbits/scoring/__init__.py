"""Scoring: from a job's generations (and verifier scores) to accuracy rows.

One module per concept: ``answers`` (reading and judging answers, the votes they cast),
``voting`` (exact Maj@K and Best-of-N), ``shards`` (gathering a job's question shards),
``command`` (the score step and ``notallbits score``). The public names are re-exported here.
"""

from notallbits.scoring.answers import (boxed_contents, extract_letter, extract_math, is_correct, judge,
                                        math_correct, parse_answer, read_integer, same_math_answer)
from notallbits.scoring.command import add_arguments, run, score_file, score_job
from notallbits.scoring.shards import gather_shards
from notallbits.scoring.voting import (best_of_n_accuracy, join_verifications, majority_accuracy,
                                       verify_seconds_by_budget)

__all__ = ["add_arguments", "best_of_n_accuracy", "boxed_contents", "extract_letter", "extract_math", "gather_shards",
           "is_correct", "join_verifications", "judge", "majority_accuracy", "math_correct", "parse_answer",
           "read_integer", "run", "same_math_answer", "score_file", "score_job", "verify_seconds_by_budget"]
