"""What every generation engine provides, and the registry that picks one by name.

A backend turns a job's requests (questions x samples still to generate) into finished
traces with forced answers at every budget (budget forcing: forcing.py). ``generate_job``
is the unit of work: an engine that can keep many sequences in flight (vLLM; the batched
transformers decoder) gets the whole job at once; the default here walks the questions
one by one. Results are yielded per question as soon as all its samples are done, so the
caller can save progress question by question.
"""

from __future__ import annotations

import importlib
from typing import Iterator

from notallbits import UserError
from notallbits.generation.forcing import ForcingSpec, QuestionRequest, SampleResult


class Backend:
    """The narrow interface run.py uses. Subclasses set ``name`` and ``tokenizer``."""

    name: str = ""
    tokenizer = None
    batch_size: int = 32  # sequences decoded together by the default generate_job

    @classmethod
    def from_spec(cls, spec: dict) -> "Backend":  # pragma: no cover - abstract
        """Build the engine for a generation job's spec (see rules/common.smk generation_spec)."""
        raise NotImplementedError

    def generate(self, prompt_ids: list[int], seeds: list[int], spec: ForcingSpec,
                 progress=None) -> list[SampleResult]:  # pragma: no cover - abstract
        """Trace every seed's sample of one prompt to the largest budget, with forced answers."""
        raise NotImplementedError

    def force_from_traces(self, prompt_ids: list[int], results: list[SampleResult], budgets: list[int],
                          spec: ForcingSpec) -> None:  # pragma: no cover - abstract
        """Add forced answers at new budgets to stored traces, without resampling them."""
        raise NotImplementedError

    def generate_job(self, requests: list[QuestionRequest], spec: ForcingSpec,
                     progress=None) -> Iterator[tuple[QuestionRequest, list[SampleResult]]]:
        """Every request's samples, yielded per question (in any order) as each finishes.
        Each result's ``sample`` is the request's sample index."""
        for req in requests:
            results: list[SampleResult] = []
            for start in range(0, len(req.samples), self.batch_size):
                chunk = slice(start, start + self.batch_size)
                for i, res in zip(req.samples[chunk],
                                  self.generate(list(req.prompt_ids), list(req.seeds[chunk]), spec, progress)):
                    res.sample = i
                    results.append(res)
            yield req, results


# name -> "module:Class"; a new engine is one entry here and one class
BACKENDS = {
    "transformers": "notallbits.generation.hf_backend:TransformersBackend",
    "vllm": "notallbits.generation.vllm_backend:VLLMBackend",
}


def make_backend(spec: dict) -> Backend:
    name = spec["backend"]
    if name not in BACKENDS:
        raise UserError(f"unknown generation backend {name!r} (known: {', '.join(BACKENDS)})")
    module, cls = BACKENDS[name].split(":")
    return getattr(importlib.import_module(module), cls).from_spec(spec)
