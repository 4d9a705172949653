"""Budget forcing (s1-style) on token ids, shared by every backend.

Thinking runs to exactly T tokens: if the model emits end-of-thinking or EOS early, that
token is replaced by the "Wait" ids and decoding continues (``wait_extension``). At each
budget T the trace is cut and the answer forced with ``</think>`` + the answer prefix.
With ``wait_extension`` off (cap only) a sample that stops early keeps its natural answer.

Budgets of one job share one trace: the trace is generated once to the largest budget and
every smaller budget is a short forced continuation of its prefix.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class ForcingSpec:
    budgets: tuple[int, ...]
    end_think_id: int
    eos_ids: frozenset[int]
    wait_ids: tuple[int, ...]
    answer_prefix_ids: tuple[int, ...]  # starts with end_think_id
    answer_max_tokens: int
    wait_extension: bool = True

    @property
    def max_budget(self) -> int:
        return max(self.budgets)

    @classmethod
    def from_tokenizer(cls, tokenizer, budgets, wait_text: str, answer_prefix: str, answer_max_tokens: int,
                       wait_extension: bool = True) -> "ForcingSpec":
        """Thinking markers and end ids from the model's own tokenizer (any family)."""
        end_think = thinking_end_id(tokenizer)
        eos = end_ids(tokenizer)
        # a leading space/newline keeps "Wait" a word of its own after the previous token
        wait_ids = tuple(tokenizer.encode(wait_text, add_special_tokens=False))
        prefix_ids = (end_think, *tokenizer.encode(answer_prefix, add_special_tokens=False))
        return cls(tuple(sorted(set(budgets))), end_think, frozenset(eos), wait_ids, prefix_ids,
                   answer_max_tokens, wait_extension)


END_THINK = "</think>"  # every reasoning family we know closes its thinking with this token
# end-of-turn / end-of-text tokens of the families we know (Qwen, DeepSeek-R1, Llama 3, Phi)
END_TOKENS = ("<|im_end|>", "<|endoftext|>", "<｜end▁of▁sentence｜>", "<|eot_id|>", "<|end_of_text|>", "<|end|>")


def thinking_end_id(tokenizer) -> int:
    """The id of ``</think>``; a tokenizer without it is not a reasoning model's: one clear line."""
    from notallbits import UserError

    token_id = tokenizer.convert_tokens_to_ids(END_THINK)
    if token_id is None or token_id == tokenizer.unk_token_id or \
            tokenizer.convert_ids_to_tokens(token_id) != END_THINK:
        name = getattr(tokenizer, "name_or_path", "") or "the model"
        raise UserError(f"{name}: the tokenizer has no {END_THINK} token, so its thinking cannot be budget-forced "
                        "(use a reasoning model: Qwen3, DeepSeek-R1-Distill, OpenReasoning-Nemotron, ...)")
    return token_id


def end_ids(tokenizer) -> set[int]:
    """Ids that end a sample: the tokenizer's EOS, the model's generation_config eos ids (when the
    tokenizer's folder has one) and the end-of-turn tokens of known families present in the vocab."""
    ids = {tokenizer.eos_token_id}
    vocab = tokenizer.get_vocab()
    ids |= {vocab[t] for t in END_TOKENS if t in vocab}
    try:
        from transformers import GenerationConfig

        gen = GenerationConfig.from_pretrained(tokenizer.name_or_path, local_files_only=True)
        eos = gen.eos_token_id
        ids |= set(eos if isinstance(eos, (list, tuple)) else [eos])
    except Exception:  # noqa: BLE001 - no generation_config.json: the tokenizer's ids stand
        pass
    return ids - {None, tokenizer.unk_token_id}


@dataclass
class Trace:
    """One sample's thinking trace, built token by token."""

    spec: ForcingSpec
    thinking: list[int] = field(default_factory=list)
    wait_positions: list[int] = field(default_factory=list)
    natural_end: int | None = None  # thinking length at a natural end (cap-only mode)
    natural_answer: list[int] = field(default_factory=list)
    _pending: list[int] = field(default_factory=list)
    finished: bool = False

    def flush_forced(self) -> None:
        """Append queued Wait ids at once: an engine that generates in chunks (vLLM) sends
        the inserted text as part of the next prompt rather than token by token."""
        while self._pending and not self.finished:
            self.thinking.append(self._pending.pop(0))
            if len(self.thinking) >= self.spec.max_budget:
                self.finished = True


    def feed(self, tokens) -> int:
        """Take a chunk an engine generated (it stops on the end ids, so the chunk's last token
        may be one to replace); returns the thinking tokens added."""
        before = len(self.thinking)
        for tok in tokens:
            self.push(tok)
            if self.finished:
                break
        self.flush_forced()
        return len(self.thinking) - before

    def push(self, sampled: int) -> int:
        """Take the sampled token, return the token actually fed to the model."""
        spec = self.spec
        if self.finished:
            return sampled
        if self.natural_end is not None:  # writing its own answer after a natural end
            self.natural_answer.append(sampled)
            # the answer budget counts tokens after the model's own </think>
            if sampled in spec.eos_ids or len(self.natural_answer) > spec.answer_max_tokens:
                self.finished = True
            return sampled
        if self._pending:
            token = self._pending.pop(0)
        elif sampled == spec.end_think_id or sampled in spec.eos_ids:
            if spec.wait_extension:
                self.wait_positions.append(len(self.thinking))
                token, *self._pending = spec.wait_ids
            else:
                self.natural_end = len(self.thinking)
                if sampled in spec.eos_ids:  # ended without an answer at all
                    self.finished = True
                else:
                    self.natural_answer.append(sampled)
                return sampled
        else:
            token = sampled
        self.thinking.append(token)
        if len(self.thinking) >= spec.max_budget:
            self.finished = True
        return token



@dataclass
class SampleResult:
    """One sample's finished trace and its forced answers: the record every backend returns
    and the progress store keeps (see progress.py)."""

    sample: int
    seed: int
    thinking_ids: list[int]
    wait_positions: list[int]  # thinking index where each Wait was inserted
    natural_end: int | None
    natural_answer: list[int]
    answers: dict[int, list[int]] = field(default_factory=dict)  # forced answers per budget
    # what producing this sample cost, kept in progress so a job's stats are the same whether
    # it ran in one go or was resumed: seconds of engine time (trace and forced answers) and,
    # on engines that step many sequences together (vLLM), this sample's share of the engine
    # steps (each step split equally over the sequences in flight), its share of the sequences
    # the engine ran in those steps, and the most sequences in any of those steps
    trace_seconds: float = 0.0
    engine_steps: float = 0.0
    sequence_steps: float = 0.0
    max_sequences_in_flight: int = 0

    def needs_forcing(self, budget: int) -> bool:
        """A sample that ended naturally within the budget keeps its own answer."""
        return self.natural_end is None or self.natural_end > budget


@dataclass(frozen=True)
class QuestionRequest:
    """The samples of one question that a job still has to generate."""

    question_id: str
    prompt_ids: tuple[int, ...]
    samples: tuple[int, ...]  # sample indices
    seeds: tuple[int, ...]  # one per sample index: a sample's trace depends only on its seed
