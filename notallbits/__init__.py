"""notallbits: memory-optimal reasoning inference, reproduced as a workflow.

Heavy dependencies (torch, transformers, vllm, pandas) are imported lazily inside the
modules that need them, so planning commands such as ``notallbits memory`` stay instant.
"""

__version__ = "0.1.0"


class UserError(Exception):
    """Bad input that the user can fix; the CLI prints it as one line and exits 2."""
