"""A deterministic tiny Qwen3 (same architecture class as the real models) and a tokenizer
made locally, so the whole pipeline runs offline through the real loading code paths.

Widths are multiples of 128 because GPTQ's group size (128) divides every linear input.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from notallbits import UserError, manifest
from notallbits.io import atomic_dir

SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<think>", "</think>"]

# Qwen3's chat-template convention, reduced to what reasoning evaluation needs: thinking is
# on unless enable_thinking=false, which pre-fills an empty think block (as Qwen3 does).
CHAT_TEMPLATE = (
    "{%- for message in messages %}"
    "{{- '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' }}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}"
    "{%- if enable_thinking is defined and enable_thinking is false %}{{- '<think>\\n\\n</think>\\n\\n' }}{%- endif %}"
    "{%- endif %}"
)

TINY_ARCH = dict(hidden_size=128, intermediate_size=256, num_hidden_layers=2, num_attention_heads=4,
                 num_key_value_heads=2, head_dim=32)


def _corpus() -> list[str]:
    """Fixed training text for the BPE merges: the words the pipeline itself writes."""
    from notallbits.data.registry import demo_arith, demo_choice

    texts = [q["question"] for q in demo_arith(64, seed=1)] + [q["question"] for q in demo_choice(64, seed=1)]
    texts += ["Wait", " Wait", "**Final Answer**", "\\boxed{", "Let me think step by step.",
              "Please reason step by step, and put your final answer within \\boxed{}.",
              "Answer with the letter of the correct option.", "The answer is", "0123456789 + - * / = ( )"]
    return texts * 4


def build_tokenizer(vocab_size: int = 512):
    """Byte-level BPE (every byte is a token, so any text encodes) with deterministic merges."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=SPECIAL_TOKENS,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(_corpus(), trainer=trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|im_end|>", pad_token="<|endoftext|>",
                                   additional_special_tokens=SPECIAL_TOKENS[1:])
    fast.chat_template = CHAT_TEMPLATE
    return fast


def build(out_dir: str | Path, seed: int = 0, dtype: str = "bfloat16", family: str = "qwen3", **arch) -> Path:
    """Write a random tiny causal LM of a model family (families.FAMILIES: qwen3, qwen2, llama)
    + tokenizer with the thinking tokens, as a normal HF folder (safetensors)."""
    import torch
    import transformers
    from transformers import AutoModelForCausalLM, GenerationConfig

    from notallbits.families import FAMILIES

    if family not in FAMILIES:
        raise UserError(f"tiny model: unknown family {family!r} (known: {', '.join(FAMILIES)})")
    out_dir = Path(out_dir)
    tokenizer = build_tokenizer()
    shape = {**TINY_ARCH, **arch}
    for key in ("hidden_size", "intermediate_size"):
        if shape[key] % 128:
            raise UserError(f"tiny model: {key}={shape[key]} is not a multiple of 128 (GPTQ group size)")
    config_class = getattr(transformers, FAMILIES[family].config_class)
    config = config_class(vocab_size=len(tokenizer), max_position_embeddings=32768, rope_theta=1_000_000.0,
                          tie_word_embeddings=True, bos_token_id=None,
                          eos_token_id=tokenizer.convert_tokens_to_ids("<|im_end|>"),
                          pad_token_id=tokenizer.pad_token_id, dtype=dtype, **shape)
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(config).to(getattr(torch, dtype))
    model.generation_config = GenerationConfig(
        eos_token_id=[tokenizer.convert_tokens_to_ids("<|im_end|>"), tokenizer.convert_tokens_to_ids("<|endoftext|>")],
        pad_token_id=tokenizer.pad_token_id, do_sample=True, temperature=0.6, top_p=0.95)
    with atomic_dir(out_dir) as tmp:
        model.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
        (tmp / "notallbits.json").write_text(json.dumps({"built_by": "notallbits.tinymodel", "seed": seed,
                                                        "family": family}) + "\n")
        manifest.write(tmp)
    return out_dir


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("out_dir", help="folder to write the checkpoint to")
    p.add_argument("--seed", type=int, default=0, help="seed of the random weights")
    p.add_argument("--family", default="qwen3", help="model family (notallbits/families.py)")


def run(args: argparse.Namespace) -> None:
    build(args.out_dir, seed=args.seed, family=args.family)
