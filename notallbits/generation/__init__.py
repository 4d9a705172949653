"""Generation: prompts, budget forcing on token ids, and the backends that run it.

Every backend writes the same record per (question, sample, budget), so scoring and
everything after it never know which engine ran.
"""

FORMAT_VERSION = 2  # bump when records or forcing semantics change; it is a rule param
