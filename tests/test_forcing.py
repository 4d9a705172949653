"""Budget forcing on token ids: exact token counts, Wait replacement, cap-only mode."""

from notallbits.generation.forcing import ForcingSpec, Trace
from tests.conftest import POSITIONS  # the position model (conftest) tells positions apart modulo this

END, EOS, PAD, WAIT1, WAIT2 = 90, 91, 92, 80, 81


def spec(budgets=(4, 8), wait=True, answer_max=3):
    return ForcingSpec(tuple(budgets), END, frozenset({EOS}), (WAIT1, WAIT2), (END, 70, 71), answer_max, wait)


def feed(trace, sampled):
    return [trace.push(t) for t in sampled]


def test_runs_to_exactly_the_largest_budget():
    tr = Trace(spec())
    fed = feed(tr, [1, 2, 3, 4, 5, 6, 7, 8])
    assert fed == [1, 2, 3, 4, 5, 6, 7, 8] and tr.finished and len(tr.thinking) == 8


def test_early_end_becomes_wait_and_counts_toward_budget():
    tr = Trace(spec())
    fed = feed(tr, [1, END, 9, 3, EOS, 9, 5, 6])
    # END -> Wait (2 ids, the second replacing the next sample), EOS -> Wait again
    assert fed == [1, WAIT1, WAIT2, 3, WAIT1, WAIT2, 5, 6]
    assert tr.thinking == fed and tr.wait_positions == [1, 4] and tr.finished


def test_cap_only_keeps_the_natural_answer():
    tr = Trace(spec(wait=False))
    fed = feed(tr, [1, 2, END, 60, 61, EOS])
    assert fed == [1, 2, END, 60, 61, EOS]
    assert tr.natural_end == 2 and tr.thinking == [1, 2] and tr.natural_answer == [END, 60, 61, EOS]
    assert tr.finished


def test_cap_only_answer_is_capped():
    tr = Trace(spec(wait=False, answer_max=2))
    feed(tr, [1, END, 60, 61, 62])
    assert tr.natural_answer == [END, 60, 61] and tr.finished


def test_eos_without_answer_in_cap_only_mode():
    tr = Trace(spec(wait=False))
    feed(tr, [1, EOS])
    assert tr.natural_end == 1 and tr.finished


def test_from_tokenizer_on_tiny_model(tiny_model):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_model)
    s = ForcingSpec.from_tokenizer(tok, [64, 32, 32], "Wait", "\n\n**Final Answer**\n\\boxed{", 16)
    assert s.budgets == (32, 64) and s.max_budget == 64
    assert s.end_think_id == tok.convert_tokens_to_ids("</think>")
    assert tok.convert_tokens_to_ids("<|im_end|>") in s.eos_ids
    assert tok.decode(s.answer_prefix_ids) == "</think>\n\n**Final Answer**\n\\boxed{"
    assert tok.decode(s.wait_ids) == "Wait"


# ---------------------------------------------------------------- forcing at the right place


def position_spec(model, budgets, answer_max=4):
    return {"dataset": "demo", "model": "pos", "model_path": str(model), "bits": 16, "kv": "full",
            "kv_settings": {"method": "full"}, "backend": "transformers", "budgets": budgets, "samples": 2,
            "sampling": {"temperature": 0.0, "top_p": 1.0, "seed": 0},
            "generation": {"wait_extension": True, "wait_text": "Wait", "answer_prefix": "\n\\boxed{",
                           "answer_max_tokens": answer_max, "batch_size": 8, "dtype": "float32",
                           "device": "cpu"}}


def test_forced_answer_is_read_at_the_budget_not_at_the_trace_end(position_model, tmp_path):
    """Catches forced answers taken from the cache at the end of the trace (or from any place
    other than the fork at the budget), in a fresh job and in a resumed job that adds a budget
    (``force_from_traces``): on the position model the answer at budget T must name position
    len(prompt) + T + len(</think> + prefix) - 1 and the next ones."""
    from transformers import AutoTokenizer

    from notallbits.data.registry import demo_arith
    from notallbits.generation.forcing import ForcingSpec
    from notallbits.generation.prompts import build_prompt
    from notallbits.generation.run import generate
    from notallbits.io import read_framed_jsonl, write_jsonl

    folder, tokens = position_model
    questions = tmp_path / "q.jsonl"
    write_jsonl(questions, demo_arith(1))
    tok = AutoTokenizer.from_pretrained(folder)
    spec = position_spec(folder, [4, 16])
    prompt = tok.encode(build_prompt(tok, demo_arith(1)[0]), add_special_tokens=False)
    fspec = ForcingSpec.from_tokenizer(tok, [4, 16], "Wait", "\n\\boxed{", 4)

    def expected(budget):
        last = len(prompt) + budget + len(fspec.answer_prefix_ids) - 1
        answer = [tokens[(last + i) % POSITIONS] for i in range(4)]
        return tok.decode(list(fspec.answer_prefix_ids[1:]) + answer, skip_special_tokens=True)

    assert len({expected(b) for b in (4, 8, 16)}) == 3  # the model tells these budgets apart
    generate(str(questions), spec, str(tmp_path / "a.jsonl"), str(tmp_path / "p"))
    _, records = read_framed_jsonl(tmp_path / "a.jsonl")
    assert len(records) == 2 * 2 and all(r["forced"] for r in records)
    for r in records:
        assert r["answer_text"] == expected(r["budget_tokens"]), r
    # resumed with a new, smaller budget: answered from the stored trace, not regenerated
    header = generate(str(questions), position_spec(folder, [4, 8, 16]), str(tmp_path / "b.jsonl"),
                      str(tmp_path / "p"))
    assert header["stats"]["generated_samples"] == 0
    _, records = read_framed_jsonl(tmp_path / "b.jsonl")
    assert sorted(r["budget_tokens"] for r in records) == [4, 4, 8, 8, 16, 16]
    for r in records:
        assert r["answer_text"] == expected(r["budget_tokens"]), r


def test_a_job_keeps_or_replaces_an_early_end_of_thinking_as_its_wait_extension_says(position_model, tmp_path):
    """Budget forcing (s1, the paper's protocol): with wait_extension an early </think> becomes
    "Wait" and thinking runs on to the budget; without it (cap-only) the model's own end stands.
    The position model, changed to emit </think> as its 4th thinking token (greedy), ends its
    thinking after 3 tokens."""
    import shutil

    import torch
    from transformers import AutoTokenizer, GPT2LMHeadModel

    from notallbits.data.registry import demo_arith
    from notallbits.generation.prompts import build_prompt
    from notallbits.generation.run import generate
    from notallbits.io import read_framed_jsonl, write_jsonl

    folder, tokens = position_model
    tok = AutoTokenizer.from_pretrained(folder)
    prompt = tok.encode(build_prompt(tok, demo_arith(1)[0]), add_special_tokens=False)
    early = tmp_path / "early-end"
    shutil.copytree(folder, early)
    model = GPT2LMHeadModel.from_pretrained(early)
    column = (len(prompt) - 1 + 3) % POSITIONS  # read where the 4th thinking token is chosen
    with torch.no_grad():
        model.lm_head.weight[tokens[column], column] = 0.0
        model.lm_head.weight[tok.convert_tokens_to_ids("</think>"), column] = 50.0
    model.save_pretrained(early)
    shutil.copy(folder / "config.json", early / "config.json")  # with the Qwen-style keys the summary reads
    questions = tmp_path / "q.jsonl"
    write_jsonl(questions, demo_arith(1))
    got = {}
    for wait in (True, False):
        spec = position_spec(early, [16])
        spec["samples"], spec["generation"]["wait_extension"] = 1, wait
        header = generate(str(questions), spec, str(tmp_path / f"{wait}.jsonl"), str(tmp_path / f"p{wait}"))
        (record,) = read_framed_jsonl(tmp_path / f"{wait}.jsonl")[1]
        # a fresh job: what this invocation generated is the cell's whole cost, natural answer included
        stats = header["stats"]
        assert [stats["invocation"][k] for k in ("trace_tokens", "answer_tokens")] == [
            stats["trace_tokens"], stats["answer_tokens"]]
        got[wait] = (record["forced"], record["thinking_tokens"], record["waits"])
    assert got == {True: (True, 16, 1), False: (False, 3, 0)}
    # the cap-only trace, reused with a budget below its end: forced there, its own end above
    generate(str(questions), {**spec, "budgets": [2, 16]}, str(tmp_path / "again.jsonl"), str(tmp_path / "pFalse"))
    header, records = read_framed_jsonl(tmp_path / "again.jsonl")
    assert header["stats"]["generated_samples"] == 0
    assert [(r["budget_tokens"], r["forced"], r["thinking_tokens"]) for r in records] == [(2, True, 2), (16, False, 3)]


def test_flush_forced_appends_the_queued_wait_at_once_up_to_the_budget():
    """vLLM's rounds: after an early end the rest of the Wait ids go in at once (the engine
    gets them as prompt), and never past the largest budget."""
    tr = Trace(spec(budgets=(4, 8)))
    feed(tr, [1, 2, END])
    assert tr.thinking == [1, 2, WAIT1] and not tr.finished
    tr.flush_forced()
    assert tr.thinking == [1, 2, WAIT1, WAIT2] and tr.wait_positions == [2] and not tr.finished
    tr = Trace(spec(budgets=(4,)))
    feed(tr, [1, 2, EOS])
    tr.flush_forced()
    assert tr.thinking == [1, 2, WAIT1, WAIT2] and tr.finished
    tr = Trace(spec(budgets=(3,)))
    feed(tr, [1, 2, END])
    tr.flush_forced()
    assert tr.thinking == [1, 2, WAIT1] and tr.finished


def test_feed_takes_an_engine_chunk_and_counts_the_thinking_it_added():
    """An engine's chunk stops on an end id: that id becomes the Wait ids (all of them at once),
    and a chunk that runs past the largest budget adds only up to it. The count returned is
    what the chunk added to the thinking, by hand: 1 + 2 Wait ids, then 5 of 6 tokens."""
    tr = Trace(spec(budgets=(4, 8)))
    assert tr.feed([1, END]) == 3
    assert tr.thinking == [1, WAIT1, WAIT2] and tr.wait_positions == [1]
    assert tr.feed([5, 6, 7, 8, 9, 10]) == 5
    assert tr.thinking == [1, WAIT1, WAIT2, 5, 6, 7, 8, 9] and tr.finished
    assert tr.feed([11]) == 0


def test_default_generate_job_runs_a_questions_samples_in_batches_of_batch_size():
    """The base engine loop: one question at a time, ``batch_size`` seeds per generate call,
    and each result labelled with the request's sample index (not its place in the batch)."""
    from notallbits.generation.backend import Backend
    from notallbits.generation.forcing import QuestionRequest, SampleResult

    calls = []

    class Engine(Backend):
        batch_size = 2

        def generate(self, prompt_ids, seeds, spec, progress=None):
            calls.append((prompt_ids, seeds, spec, progress))
            return [SampleResult(-1, s, [], [], None, []) for s in seeds]

    requests = [QuestionRequest("q1", (7, 8), (0, 2, 3, 5, 6), (10, 12, 13, 15, 16)),
                QuestionRequest("q2", (9,), (1,), (21,))]
    forcing, bar = spec(), object()
    out = [(req.question_id, [(r.sample, r.seed) for r in res])
           for req, res in Engine().generate_job(requests, forcing, progress=bar)]
    assert out == [("q1", [(0, 10), (2, 12), (3, 13), (5, 15), (6, 16)]), ("q2", [(1, 21)])]
    assert [(p, s) for p, s, _, _ in calls] == [([7, 8], [10, 12]), ([7, 8], [13, 15]), ([7, 8], [16]), ([9], [21])]
    assert all(f is forcing and b is bar for _, _, f, b in calls)  # the job's forcing spec and progress bar


def test_a_sample_that_ends_its_thinking_exactly_at_the_budget_keeps_its_own_answer():
    """s1's rule: forcing applies when thinking would run past the budget; a trace that closed
    its thinking at the budget's last token ended within it."""
    from notallbits.generation.forcing import SampleResult

    natural = SampleResult(0, 1, [5] * 8, [], 8, [END, 60, EOS])
    assert not natural.needs_forcing(8) and not natural.needs_forcing(16)
    assert natural.needs_forcing(7)
    assert SampleResult(0, 1, [5] * 8, [], None, []).needs_forcing(8)  # never ended: always forced


class _Tokenizer:
    """What end_ids reads of a tokenizer: a Llama-3.1-Instruct-like vocabulary, whose EOS is
    <|eot_id|> and whose generation_config (when present) lists three end ids."""

    def __init__(self, folder, eos_token_id=128009):
        self.name_or_path, self.eos_token_id, self.unk_token_id = str(folder), eos_token_id, None

    def get_vocab(self):
        return {"<|begin_of_text|>": 128000, "<|end_of_text|>": 128001, "<|eom_id|>": 128008, "<|eot_id|>": 128009,
                "hello": 15339}


def test_end_ids_join_the_tokenizers_eos_known_end_tokens_and_the_generation_config(tmp_path):
    import json

    from notallbits.generation.forcing import end_ids

    # no generation_config.json: the tokenizer's EOS and the known end-of-turn tokens in its vocab
    assert end_ids(_Tokenizer(tmp_path)) == {128001, 128009}
    # an EOS outside the known list is still an end id
    assert end_ids(_Tokenizer(tmp_path, eos_token_id=15339)) == {128001, 128009, 15339}
    # a generation_config.json naming one end id (an int, not a list) adds it to the others
    (tmp_path / "generation_config.json").write_text(json.dumps({"bos_token_id": 128000, "eos_token_id": 128008}))
    assert end_ids(_Tokenizer(tmp_path)) == {128001, 128008, 128009}
    # Llama 3.1 Instruct's generation_config.json adds <|eom_id|>
    (tmp_path / "generation_config.json").write_text(json.dumps(
        {"bos_token_id": 128000, "do_sample": True, "eos_token_id": [128001, 128008, 128009], "temperature": 0.6,
         "top_p": 0.9, "transformers_version": "4.42.3"}))
    assert end_ids(_Tokenizer(tmp_path)) == {128001, 128008, 128009}



class _LlamaLikeTokenizer:
    """A tokenizer that, like Llama's and DeepSeek-R1-Distill-Llama's, adds BOS when asked for
    special tokens (encode's default), maps unknown tokens to its unk id, one id per word."""

    vocab = {"<s>": 1, "<unk>": 0, "</think>": 5, "Wait": 6, "Final": 7, "Answer:": 8}

    def __init__(self, name="org/llama-reasoner", has_end=True):
        self.name_or_path, self.unk_token_id, self.has_end = name, 0, has_end

    def convert_tokens_to_ids(self, token):
        return self.vocab[token] if token in self.vocab and (self.has_end or token != "</think>") else 0

    def convert_ids_to_tokens(self, token_id):
        return {v: k for k, v in self.vocab.items()}.get(token_id, "<unk>")

    def encode(self, text, add_special_tokens=True):
        return [1] * add_special_tokens + [self.vocab[w] for w in text.split()]

    eos_token_id = 2

    def get_vocab(self):
        return dict(self.vocab)


def test_from_tokenizer_encodes_wait_and_the_answer_prefix_without_bos():
    """The Wait ids and the answer prefix are inserted mid-sequence: a BOS there would be a
    second start of text. Wait extension is on unless asked off (s1's budget forcing)."""
    tok = _LlamaLikeTokenizer()
    s = ForcingSpec.from_tokenizer(tok, [8, 4], "Wait", "Final Answer:", 16)
    assert (s.budgets, s.end_think_id, s.wait_ids, s.answer_prefix_ids) == ((4, 8), 5, (6,), (5, 7, 8))
    assert s.wait_extension is True and s.answer_max_tokens == 16
    assert ForcingSpec.from_tokenizer(tok, [8], "Wait", "Final Answer:", 16, wait_extension=False).wait_extension is False


def test_a_tokenizer_without_the_end_of_thinking_token_is_refused_naming_the_model():
    """No </think>: an unk id back, or (tokenizers that split unknown text) an id that is some
    other token. Both stop with one line naming the model."""
    import pytest

    from notallbits import UserError
    from notallbits.generation.forcing import thinking_end_id

    with pytest.raises(UserError, match="^org/llama-base: the tokenizer has no </think> token"):
        thinking_end_id(_LlamaLikeTokenizer("org/llama-base", has_end=False))
    other = _LlamaLikeTokenizer("org/splitter")
    other.convert_tokens_to_ids = lambda token: 6  # "Wait": a real id, not </think>
    with pytest.raises(UserError, match="^org/splitter: the tokenizer has no </think>"):
        thinking_end_id(other)
    with pytest.raises(UserError, match="^the model: the tokenizer has no </think>"):
        thinking_end_id(_LlamaLikeTokenizer("", has_end=False))
    nameless = _LlamaLikeTokenizer(has_end=False)
    del nameless.name_or_path  # a tokenizer built in memory, not loaded from a folder
    with pytest.raises(UserError, match="^the model: the tokenizer has no </think>"):
        thinking_end_id(nameless)
    assert thinking_end_id(_LlamaLikeTokenizer()) == 5


def test_prompt_opens_the_thinking_block_once_whatever_the_chat_template_leaves(tiny_model):
    """Qwen3's template (thinking on) ends at "<|im_start|>assistant\\n" and leaves <think> to the
    model; DeepSeek-R1's newer templates end with "<think>\\n" themselves, some with a bare
    "<think>": the prompt always ends with exactly one "<think>\\n"."""
    from transformers import AutoTokenizer

    from notallbits.generation.prompts import build_prompt, user_message

    record = {"id": "q", "task": "math", "question": "What is 2 + 3?", "answer": "5"}
    content = user_message(record)
    qwen3 = AutoTokenizer.from_pretrained(tiny_model)
    assert build_prompt(qwen3, record) == f"<|im_start|>user\n{content}<|im_end|>\n<|im_start|>assistant\n<think>\n"

    class Template:
        def __init__(self, ending):
            self.ending = ending

        def apply_chat_template(self, messages, tokenize=True, add_generation_prompt=False, enable_thinking=True):
            (message,) = messages
            return f"<｜User｜>{message['content']}<｜Assistant｜>{self.ending}"

    for ending in ("<think>\n", "<think>", ""):
        assert build_prompt(Template(ending), record) == f"<｜User｜>{content}<｜Assistant｜><think>\n", ending


class JinjaTemplate:
    """A tokenizer's apply_chat_template reduced to rendering its Jinja template (transformers
    passes the extra keyword arguments on to the template as variables)."""

    def __init__(self, template):
        import jinja2

        self.template = jinja2.Environment().from_string(template)

    def apply_chat_template(self, messages, tokenize=True, add_generation_prompt=False, **kwargs):
        assert not tokenize
        return self.template.render(messages=messages, add_generation_prompt=add_generation_prompt, **kwargs)


def test_prompt_asks_for_thinking_in_templates_that_default_it_off_or_read_none_as_off():
    """Thinking must be asked for explicitly, as True: GLM-4.x's templates append "/nothink" to
    the user turn when `enable_thinking is defined and not enable_thinking` (so None turns it
    off), Gemma 4's open an empty thought channel unless `enable_thinking | default(false)`
    (so leaving it out turns it off)."""
    from notallbits.generation.prompts import build_prompt, user_message

    record = {"id": "q", "task": "math", "question": "What is 2 + 3?", "answer": "5"}
    content = user_message(record)
    glm = JinjaTemplate("{% for m in messages %}<|{{ m.role }}|>\n{{ m.content }}"
                        "{{ '/nothink' if (enable_thinking is defined and not enable_thinking) else '' }}{% endfor %}"
                        "{% if add_generation_prompt %}<|assistant|>{% endif %}")
    assert build_prompt(glm, record) == f"<|user|>\n{content}<|assistant|><think>\n"
    toy = {"task": "choice", "question": "3 5", "choices": ["1", "8", "2", "0"], "answer": "B"}
    assert build_prompt(glm, toy, "toy") == "<|user|>\n3 5\nA)1 B)8 C)2 D)0<|assistant|><think>\n"  # the style is used
    gemma4 = JinjaTemplate("{% for m in messages %}<|turn>{{ m.role }}\n{{ m.content }}<turn|>\n{% endfor %}"
                           "{% if add_generation_prompt %}<|turn>model\n"
                           "{% if not enable_thinking | default(false) %}<|channel>thought\n<channel|>{% endif %}{% endif %}")
    assert build_prompt(gemma4, record) == f"<|turn>user\n{content}<turn|>\n<|turn>model\n<think>\n"
