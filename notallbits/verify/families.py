"""Verifier families: how each kind of process reward model (PRM) is built, prompted and read.

One entry per family, as its authors' inference code runs it (our own classes on transformers'
``Qwen2Model``, no remote code). A checkpoint's ``config.json`` ``architectures`` names its family.

``qwen2-prm`` — Qwen2.5-Math-PRM-7B/72B (``Qwen2ForProcessRewardModel``; the model card's usage
code and the checkpoint's modeling_qwen2_rm.py):
  * weights: ``model.*`` (a Qwen2 decoder, no lm_head) and ``score.0``/``score.2`` =
    Linear(h, h) -> ReLU -> Linear(h, 2), with biases, in the checkpoint's dtype (bf16);
  * prompt: system "Please reason step by step, and put your final answer within \\boxed{}.",
    the question as the user turn, the steps joined and closed by ``<extra_0>`` as the assistant
    turn, the chat template without a generation prompt (so the text ends ``<extra_0><|im_end|>\\n``);
  * separator id: ``tokenizer.encode("<extra_0>")[0]``;
  * a step's reward: softmax over the 2 logits at its separator, class 1.

``ensemble-prm`` — ActPRM, ActPRM-X (``Qwen2ForEnsemblePRM``; sail-sg/ActivePRM:
``models/qwen2_ensemble_prm/modeling_qwen2.py``, ``models/nets.py``, and the worker that scores
ProcessBench, ``examples/py_scripts/test_actprm_on_processbench.py`` ``EnsemblePRMWorker``):
  * weights: ``model.*`` (a Qwen2 decoder, no lm_head) and ``score.model.nn1/nn2/nn_out``, E heads
    each a ReLU MLP h -> 128 -> 128 -> 1 stored as weight [E, in, out] and bias [E, out] (float32
    in the authors' classes); ``score.reg_model.*`` is a frozen copy used only by the training
    regulariser: it never touches a reward, so it is not loaded here (the authors' worker loads it);
  * config: ``num_ensemble`` (E) and ``rr_token`` (the separator; the worker falls back to " \\n\\n");
  * prompt (the worker's): system "You are a helpful and harmless assistant. You should think
    step-by-step and put your final answer within \\boxed{}.", the question as the user turn, the
    chat template *with* the generation prompt, then the steps joined by ``rr_token`` with one more
    at the end (no end-of-turn after it);
  * separator id: ``tokenizer(rr_token).input_ids[0]``;
  * a step's reward: the mean over the E heads of sigmoid(head logit) at its separator
    (``model.inference`` then ``logits.mean(dim=0)``).

The authors' worker pads a batch on the left with eos; we pad on the right. Attention is causal and
a real token never sees padding either way; positions differ by the padding's length on the left,
which rotary attention does not see (equal up to rounding: tests/test_verify.py compares).
"""

from __future__ import annotations

from dataclasses import dataclass

from notallbits import UserError

ENSEMBLE_HIDDEN = 128  # nets.py EnsembleModel's hidden_dim (Qwen2ForEnsemblePRM never changes it)


@dataclass(frozen=True)
class VerifierFamily:
    name: str
    architecture: str  # config.json ``architectures`` entry
    system: str
    generation_prompt: bool  # steps follow the chat template's generation prompt (else: an assistant turn)

    # ------------------------------------------------------------ prompt
    def separator(self, config) -> str:
        raise NotImplementedError

    def separator_id(self, tokenizer, separator: str) -> int:
        raise NotImplementedError

    def render(self, tokenizer, question: str, steps: list[str], separator: str) -> list[int]:
        """Token ids of the family's input: system, question, steps each closed by the separator."""
        solution = separator.join(steps) + separator
        messages = [{"role": "system", "content": self.system}, {"role": "user", "content": question}]
        if self.generation_prompt:
            text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True) + solution
        else:
            messages.append({"role": "assistant", "content": solution})
            text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=False)
        return tokenizer(text)["input_ids"]

    # ------------------------------------------------------------ model
    def model_class(self):
        raise NotImplementedError

    def check_config(self, source: str, config) -> None:
        pass

    def rewards(self, output, at_separator) -> list[list[float]]:
        """Per sequence: the reward of each separator position (``at_separator``: bool [B, L])."""
        raise NotImplementedError


class QwenMathPRM(VerifierFamily):
    def separator(self, config) -> str:
        return "<extra_0>"

    def separator_id(self, tokenizer, separator: str) -> int:
        ids = tokenizer.encode(separator)
        if len(ids) != 1:
            raise UserError(f"its tokenizer splits the step separator {separator!r} into {len(ids)} tokens")
        return ids[0]

    def model_class(self):
        from torch import nn
        from transformers import Qwen2Config
        from transformers.models.qwen2.modeling_qwen2 import Qwen2Model, Qwen2PreTrainedModel

        class Qwen2ForProcessRewardModel(Qwen2PreTrainedModel):
            config_class = Qwen2Config

            def __init__(self, config):
                super().__init__(config)
                self.model = Qwen2Model(config)
                self.score = nn.Sequential(nn.Linear(config.hidden_size, config.hidden_size), nn.ReLU(),
                                           nn.Linear(config.hidden_size, getattr(config, "num_labels", 2)))
                self.post_init()

            def forward(self, input_ids, attention_mask=None):
                hidden = self.model(input_ids=input_ids, attention_mask=attention_mask, use_cache=False).last_hidden_state
                return self.score(hidden)  # (batch, seq, 2)

        return Qwen2ForProcessRewardModel

    def rewards(self, output, at_separator) -> list[list[float]]:
        probs = output.float().softmax(dim=-1)[..., 1]
        return [probs[i][at_separator[i]].tolist() for i in range(probs.shape[0])]


class EnsemblePRM(VerifierFamily):
    def separator(self, config) -> str:
        return getattr(config, "rr_token", None) or " \n\n"

    def separator_id(self, tokenizer, separator: str) -> int:
        return tokenizer(separator)["input_ids"][0]

    def check_config(self, source: str, config) -> None:
        if not isinstance(getattr(config, "num_ensemble", None), int) or config.num_ensemble < 1:
            raise UserError(f"{source}: config.json of a {self.architecture} lacks num_ensemble (its number of heads)")

    def model_class(self):
        import torch
        from torch import nn
        from transformers import Qwen2Config
        from transformers.models.qwen2.modeling_qwen2 import Qwen2Model, Qwen2PreTrainedModel

        class EnsembleLinear(nn.Module):
            """E independent linears: weight [E, in, out], bias [E, out] (nets.py's EnsembleFC)."""

            def __init__(self, heads: int, fan_in: int, fan_out: int):
                super().__init__()
                self.weight = nn.Parameter(torch.empty(heads, fan_in, fan_out))
                self.bias = nn.Parameter(torch.empty(heads, fan_out))

            def forward(self, x):  # (E, B, L, in) -> (E, B, L, out), in the heads' dtype
                x = x.to(self.weight.dtype)
                return torch.einsum("ebli,eio->eblo", x, self.weight) + self.bias[:, None, None, :]

        class EnsembleHeads(nn.Module):
            def __init__(self, hidden: int, heads: int):
                super().__init__()
                self.nn1 = EnsembleLinear(heads, hidden, ENSEMBLE_HIDDEN)
                self.nn2 = EnsembleLinear(heads, ENSEMBLE_HIDDEN, ENSEMBLE_HIDDEN)
                self.nn_out = EnsembleLinear(heads, ENSEMBLE_HIDDEN, 1)
                self.heads = heads

            def forward(self, hidden):  # (B, L, h) -> logits (E, B, L)
                x = hidden[None].expand(self.heads, *hidden.shape)
                x = torch.relu(self.nn1(x))
                x = torch.relu(self.nn2(x))
                return self.nn_out(x).squeeze(-1)

        class Score(nn.Module):  # the checkpoint's ``score``: heads under ``model``, reg_model not kept
            def __init__(self, hidden: int, heads: int):
                super().__init__()
                self.model = EnsembleHeads(hidden, heads)

        class Qwen2ForEnsemblePRM(Qwen2PreTrainedModel):
            config_class = Qwen2Config
            _keep_in_fp32_modules_strict = ["score"]  # float32 heads (also under bf16), as the authors' EnsembleFC creates them
            _keys_to_ignore_on_load_unexpected = [r"^score\.reg_model\."]

            def __init__(self, config):
                super().__init__(config)
                self.model = Qwen2Model(config)
                self.score = Score(config.hidden_size, config.num_ensemble)
                self.post_init()

            def _init_weights(self, module):
                if isinstance(module, EnsembleLinear):
                    nn.init.normal_(module.weight, std=0.5 / module.weight.shape[1] ** 0.5)
                    nn.init.zeros_(module.bias)
                else:
                    super()._init_weights(module)

            def forward(self, input_ids, attention_mask=None):
                hidden = self.model(input_ids=input_ids, attention_mask=attention_mask, use_cache=False).last_hidden_state
                return self.score.model(hidden)  # (E, batch, seq) logits

        return Qwen2ForEnsemblePRM

    def rewards(self, output, at_separator) -> list[list[float]]:
        probs = output.float().sigmoid().mean(dim=0)  # (batch, seq): the heads' mean probability
        return [probs[i][at_separator[i]].tolist() for i in range(probs.shape[0])]


FAMILIES = {f.architecture: f for f in (
    QwenMathPRM("qwen2-prm", "Qwen2ForProcessRewardModel",
                "Please reason step by step, and put your final answer within \\boxed{}.", generation_prompt=False),
    EnsemblePRM("ensemble-prm", "Qwen2ForEnsemblePRM",
                "You are a helpful and harmless assistant. You should think step-by-step and put your final "
                "answer within \\boxed{}.", generation_prompt=True),
)}
BY_NAME = {f.name: f for f in FAMILIES.values()}


def family_of(source: str, config) -> VerifierFamily:
    archs = getattr(config, "architectures", None) or []
    found = [FAMILIES[a] for a in archs if a in FAMILIES]
    if not found or getattr(config, "model_type", None) != "qwen2":
        raise UserError(f"{source}: not a verifier of a known family (config.json architectures {archs}, "
                        f"model_type {getattr(config, 'model_type', None)!r}; known: {', '.join(FAMILIES)})")
    return found[0]


@dataclass
class Verifier:
    """A loaded PRM: its family, model, tokenizer, separator and separator id."""

    family: VerifierFamily
    model: object
    tokenizer: object
    separator: str
    separator_id: int
    pad_id: int

    @property
    def context_tokens(self) -> int:
        return self.model.config.max_position_embeddings

    def render(self, question: str, steps: list[str]) -> list[int]:
        return self.family.render(self.tokenizer, question, steps, self.separator)

    def step_rewards(self, batch: list[list[int]], device: str) -> list[list[float]]:
        """Per sequence: one reward per separator position (right-padded batch; attention is
        causal, so padding never reaches a real position)."""
        import torch

        width = max(len(ids) for ids in batch)
        input_ids = torch.full((len(batch), width), self.pad_id, dtype=torch.long)
        mask = torch.zeros((len(batch), width), dtype=torch.long)
        for i, ids in enumerate(batch):
            input_ids[i, : len(ids)] = torch.tensor(ids)
            mask[i, : len(ids)] = 1
        input_ids, mask = input_ids.to(device), mask.to(device)
        with torch.inference_mode():
            output = self.model(input_ids, attention_mask=mask)
        return self.family.rewards(output, (input_ids == self.separator_id) & mask.bool())


def load(source: str, dtype: str = "auto", device: str = "cpu") -> Verifier:
    """A verifier from a folder or hub id, by its family; every weight the family reads must be in
    the checkpoint with its shape, and nothing else (but ``score.reg_model``), or it fails in one line.
    ``dtype``: auto = the checkpoint's own (config.json ``torch_dtype``/``dtype``)."""
    import torch
    from transformers import AutoTokenizer, Qwen2Config

    config = Qwen2Config.from_pretrained(source)
    family = family_of(source, config)
    family.check_config(source, config)
    if dtype == "auto":
        stored = getattr(config, "dtype", None) or getattr(config, "torch_dtype", None) or "bfloat16"
        dtype = str(stored).removeprefix("torch.")
    try:
        model, info = family.model_class().from_pretrained(source, config=config, dtype=getattr(torch, dtype),
                                                           output_loading_info=True)
    except RuntimeError as exc:  # a tensor of another shape
        first = next((line for line in str(exc).splitlines() if "size mismatch" in line or "shape" in line),
                     str(exc).splitlines()[0] if str(exc) else "")
        raise UserError(f"{source}: weights do not fit a {family.architecture}: {first.strip()}") from None
    problems = [("lacks", sorted(info.get("missing_keys") or [])),
                ("has unexpected", sorted(info.get("unexpected_keys") or [])),
                ("has wrongly shaped", sorted(str(m[0] if isinstance(m, tuple) else m)
                                              for m in info.get("mismatched_keys") or []))]
    for what, keys in problems:
        if keys:
            raise UserError(f"{source}: checkpoint {what} {len(keys)} weights of a {family.architecture} "
                            f"(first: {keys[0]!r}); it is not this family's checkpoint")
    tokenizer = AutoTokenizer.from_pretrained(source)
    separator = family.separator(config)
    try:
        sep_id = family.separator_id(tokenizer, separator)
    except UserError as exc:
        raise UserError(f"{source}: {exc}") from None
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id or 0
    return Verifier(family, model.to(device).eval(), tokenizer, separator, sep_id, pad_id)
