# Config validation, the cell grid, wildcard constraints and input functions.
# The only place with Python helpers; every rule file reads from here.
import functools
import json
import os
import re
import sys
from pathlib import Path

from notallbits import UserError
from notallbits import grid
from notallbits import provenance
from notallbits import weights
from notallbits.generation import FORMAT_VERSION  # records or forcing semantics changed: rerun
from notallbits.verify import FORMAT_VERSION as VERIFY_FORMAT_VERSION  # stdlib-only at import
from notallbits.codegrade import VERDICT_VERSION  # a code verdict can change: rescore (stdlib-only)

# hub.cache is this process's cache too: validation sizes hub models from their cached config.json
if isinstance(config.get("hub"), dict) and config["hub"].get("cache"):
    os.environ["HF_HOME"] = os.path.abspath(os.path.expanduser(str(config["hub"]["cache"])))

try:
    config = grid.validate(config)  # fills schema defaults, checks cross references
except UserError as exc:
    sys.exit(f"error: {exc}")

# Every job imports the workflow's own package from here, not from an install: envs/*.yaml
# list third-party packages only (Snakemake copies them to .snakemake/conda/<hash>.yaml, where
# a relative `-e ..` would point at .snakemake/). The path is exported inside each job's command:
# Snakemake drops PYTHONPATH from the environment of every job in a conda env
# (snakemake/shell.py, conda_block_conflicting_envvars) and a script: entry only has its own
# folder on sys.path. The prefix is applied when a job runs (shell and script entries alike), so
# it is no part of a rule's code: moving the checkout reruns nothing. Each job, local or on a
# cluster node, parses this file again.
from notallbits.cluster import job_shell_prefix

# (shell.prefix formats its text like a shell entry: braces doubled)
shell.prefix(job_shell_prefix(workflow.basedir, config["hub"]["cache"]).replace("{", "{{").replace("}", "}}"))

JOBS = grid.jobs(config)  # (dataset, model, bits, kv) -> budgets, samples, K, backend
DATASETS = sorted({j.dataset for j in JOBS})
RESULTS = provenance.SHARED  # what every config shares: data, checkpoints, generations, verifier scores
# this config's own results: scores, summary, analysis, figures, claims, report (config `output:`,
# default results/<config file name>); moving it changes no params of the shared steps above
CONFIGFILE = str((list(workflow.overwrite_configfiles) or ["config.yaml"])[-1])
try:
    OUTPUT = provenance.output_dir(config, CONFIGFILE)
except UserError as exc:
    sys.exit(f"error: {exc}")
# appended to shell entries that log to a file: a failed job also shows its last line (the
# one-line error) on the console, as script entries do
SHOW_ERROR = " || {{ tail -n 1 {log} >&2; exit 1; }}"


def _alternatives(names):
    return "|".join(re.escape(str(n)) for n in sorted(names, key=str))


wildcard_constraints:
    dataset=_alternatives(config["datasets"]),
    model=_alternatives(config["models"]),
    bits=_alternatives(weights.BY_TAG),  # a weight format's tag: 4, 8, 16 (GPTQ/bf16), awq4, fp8
    qbits=_alternatives(f.tag for f in weights.FORMATS.values() if f.quantized),
    kv=_alternatives(set(config["kv_methods"]) | {"full"}),
    shard=r"\d+of\d+",
    verifier=_alternatives(config["verifiers"]) or "^$",


def built_models(kind):
    return [m for m, spec in config["models"].items() if spec.get("build") == kind]


def bf16_path(model):
    """Where the 16-bit checkpoint comes from: built here, a local folder, or a hub id."""
    spec = config["models"][model]
    return f"{RESULTS}/models/{model}/w16" if spec.get("build") == "tiny" else spec["source"]


def model_path(model, bits):
    """The checkpoint of a weight format (``bits``: its path tag, or a bit count of GPTQ/bf16)."""
    fmt = weights.by_tag(bits)
    return f"{RESULTS}/models/{model}/w{fmt.tag}" if fmt.quantized else bf16_path(model)


def is_local(path):
    return not grid.HF_ID.match(path) or Path(path).exists()


# ---------------------------------------------------------------- the hub (rules/download.smk)
# Jobs run with the hub offline; a checkpoint from the hub is fetched first by a local rule, whose
# manifest the job takes as input (ancient: fetching again reruns nothing).
from notallbits import downloads, hubcheck


def fetched_by_this_run():
    """The download and prepare_data jobs this run will run, by what they fetch."""
    out = {"checkpoints": set(), "corpora": set(), "datasets": set()}
    for job in workflow.dag.needrun_jobs():
        w = job.wildcards_dict
        if job.rule.name == "download_checkpoint":
            out["checkpoints"].add((w["kind"], w["name"]))
        elif job.rule.name == "download_calibration":
            out["corpora"].add(w["corpus"])
        elif job.rule.name == "prepare_data":
            out["datasets"].add(w["dataset"])
    return out


# Before the first job of a run (not a dry run): what the hub cannot give this run
onstart:
    _hub_problems = hubcheck.startup_problems(config, fetches=fetched_by_this_run())
    if _hub_problems:
        sys.exit(f"error: {_hub_problems[0]}" + (f" (and {len(_hub_problems) - 1} more: notallbits plan lists them)"
                                                 if len(_hub_problems) > 1 else ""))


def hub_source(wildcards):
    return config[wildcards.kind][wildcards.name]["source"]


def checkpoint_inputs(path, kind, name):
    """A local checkpoint folder itself; for a hub id, the manifest of its download."""
    if is_local(path):
        return {"model": path}
    return {"download": ancient(downloads.checkpoint_manifest(kind, name))}


def download_targets():
    corpus = hubcheck.needs_calibration_corpus(config)
    return ([downloads.checkpoint_manifest(kind, name) for kind, name in hubcheck.hub_checkpoints(config)]
            + ([downloads.corpus_file(corpus)] if corpus else [])
            + [f"{RESULTS}/data/{d}.jsonl" for d in config["datasets"]])


def job_of(wildcards):
    fmt = weights.by_tag(wildcards.bits)
    return grid.Job(wildcards.dataset, wildcards.model, fmt.bits, wildcards.kv, fmt.method)


# ---------------------------------------------------------------- resources
# Sized from the model so a scheduler (SLURM) asks for what a job needs: host memory for
# loading the checkpoint, and a runtime from the tokens the job generates at a throughput
# that falls with model size. Override per rule with `set-resources` in a profile.
from notallbits.memory import GIB, Arch, weight_bytes  # torch-free, instant
from notallbits.cluster import vllm_host_memory_gib


def _arch(model):
    from notallbits.modelarch import arch_of  # the config was checked at start-up: facts exist

    return arch_of(model, config["models"][model])


@functools.lru_cache(maxsize=None)  # asked for every generation and quantize job
def _bf16_gib(model):
    return weight_bytes(_arch(model), 16) / GIB


def gen_mem_mb(wildcards):
    """Host memory of a generation job: a vLLM job holds two processes and inductor's compile
    workers besides the checkpoint's pages (notallbits.cluster.vllm_host_memory_gib)."""
    if wildcards.get("dataset") and JOBS[job_of(wildcards)].backend == "vllm":
        return int(1024 * vllm_host_memory_gib(_bf16_gib(wildcards.model)))
    return int(1024 * (4 + 1.25 * _bf16_gib(wildcards.model)))


def quantize_mem_mb(wildcards):
    return int(1024 * (8 + 2.5 * _bf16_gib(wildcards.model)))


def quantize_runtime(wildcards):
    return capped(30 + 6 * _bf16_gib(wildcards.model))


def gen_runtime(wildcards):
    """Minutes to ask the scheduler for: decode at the GPUs' memory bandwidth (weights + KV of
    the sequences in flight per step; notallbits.plan.job_minutes), at most
    hardware.max_runtime_minutes."""
    return _job_runtime(job_of(wildcards))


@functools.lru_cache(maxsize=None)
def _job_runtime(job):  # the same for every shard of a job: computed once per job
    from notallbits.plan import job_minutes, question_count

    questions = -(-question_count(config["datasets"][job.dataset]) // job_shards(job))  # one shard's
    return capped(job_minutes(config, job, JOBS[job], questions))


# The longest runtime a job may ask for: hardware.max_runtime_minutes, else the profile's default
# resource max_runtime_minutes (profiles/slurm; Snakemake passes default resources on to the
# jobs it submits, so a job on a node shards its inputs alike). A run with a cluster executor
# and neither stops before submitting anything (checked when the DAG is built: the executor is
# unknown while this file is parsed; a dry run stands in its own executor, so it cannot tell).
from notallbits.cluster import profile_runtime_cap, runtime_cap_problem

if config["hardware"]["max_runtime_minutes"] is None:
    config["hardware"]["max_runtime_minutes"] = profile_runtime_cap(workflow.resource_settings.default_resources)


def runtime_cap():
    cap = config["hardware"]["max_runtime_minutes"]
    if cap is None and workflow.non_local_exec:
        sys.exit(f"error: {runtime_cap_problem()}")
    return cap


def capped(minutes):
    cap = runtime_cap()
    return int(minutes if cap is None else min(minutes, cap))


# ---------------------------------------------------------------- input functions
def bf16_source(wildcards):
    return bf16_path(wildcards.model)


from notallbits.calibration import source_kind as _calibration_kind

CALIBRATION = config["quantization"]["calibration"]


def quantize_settings(wildcards):
    """Everything in the config that changes a quantized checkpoint (its method's quantizer
    options, and calibration where the method calibrates), as one canonical JSON param: an edit
    reruns quantize and what follows it, for the methods that read the edited key only."""
    fmt = weights.by_tag(wildcards.qbits)
    return json.dumps(weights.quantizer_options(fmt, config["quantization"]), sort_keys=True)


def quantize_input(wildcards):
    inputs = checkpoint_inputs(bf16_path(wildcards.model), "models", wildcards.model)
    kind = _calibration_kind(CALIBRATION["source"]) if weights.by_tag(wildcards.qbits).calibrated else None
    if kind == "file":
        inputs["calibration"] = CALIBRATION["source"]
    elif kind in hubcheck.HUB_CORPORA:  # its documents, fetched by a local rule
        inputs["calibration"] = downloads.corpus_file(kind)
    elif kind == "traces":
        inputs["calibration"] = f"{RESULTS}/calibration/{wildcards.model}/traces.jsonl"
    return inputs


def calibration_file_arg(wildcards, input):
    return f"--calibration-file {input.calibration}" if "calibration" in input.keys() else ""


def calibration_traces_input(wildcards):
    return {"questions": f"{RESULTS}/data/{CALIBRATION.get('dataset')}.jsonl",
            **checkpoint_inputs(bf16_path(wildcards.model), "models", wildcards.model)}


def calibration_traces_spec(wildcards):
    """What changes the bf16 model's calibration traces, as one canonical JSON param."""
    dataset = CALIBRATION.get("dataset")
    return json.dumps(
        {
            "model_path": bf16_path(wildcards.model),
            "dataset": dataset,
            "prompt_style": config["datasets"].get(dataset, {}).get("prompt_style", "default"),
            "samples": CALIBRATION["samples"],
            "seq_len": CALIBRATION["seq_len"],
            "seed": CALIBRATION["seed"],
            "temperature": config["sampling"]["temperature"],
            "top_p": config["sampling"]["top_p"],
            "dtype": config["generation"]["dtype"],
            "device": config["generation"]["device"],
            "batch_size": CALIBRATION["batch_size"],
        },
        sort_keys=True,
    )


def generate_input(wildcards):
    return {"questions": f"{RESULTS}/data/{wildcards.dataset}.jsonl",
            **checkpoint_inputs(model_path(wildcards.model, wildcards.bits), "models", wildcards.model)}


# ---------------------------------------------------------------- shards and GPUs per job
@functools.lru_cache(maxsize=None)
def job_shards(job):
    """Question shards of a generation job (notallbits.plan.job_shards: the config's shards,
    raised so no shard's runtime exceeds hardware.max_runtime_minutes); 1 = one unsharded job."""
    from notallbits.plan import job_shards as planned_shards, question_count

    return planned_shards(config, JOBS[job], question_count(config["datasets"][job.dataset]))


def generation_files(wildcards):
    """The generation output(s) of a job: one file, or one per question shard (scoring gathers them)."""
    # a cluster run without a runtime cap stops here, when the DAG is built, before any job is
    # submitted (not in the cached job_shards: the aggregate and report rules list every job's
    # files while this file is parsed, when the executor is not known yet)
    runtime_cap()
    job = job_of(wildcards)
    stem = f"{RESULTS}/generations/{job.key}"
    n = job_shards(job)
    return [f"{stem}.jsonl"] if n == 1 else [f"{stem}.shard{i}of{n}.jsonl" for i in range(1, n + 1)]


def model_gpus(wildcards):
    """GPUs a generation job takes: models.<name>.gpus on vLLM (tensor parallelism); one on the
    transformers backend (KV-compression jobs), which runs a model on one device."""
    if JOBS[job_of(wildcards)].backend != "vllm":
        return 1
    return config["models"][wildcards.model].get("gpus", 1)


def generation_spec(wildcards):
    """Everything that changes a generation job's results, as one JSON param: editing any
    of it reruns that job only; editing code or comments reruns nothing. A shard adds which
    questions it takes; a multi-GPU model adds its GPU count; a job a verifier reads adds
    thinking_text (all absent otherwise, so adding a verifier rewrites only its jobs' records,
    from their stored traces)."""
    job = job_of(wildcards)
    spec = JOBS[job]
    model = wildcards.model
    extra = {}
    if wildcards.get("shard"):
        index, count = wildcards.shard.split("of")
        extra["shard"] = [int(index), int(count)]
    if model_gpus(wildcards) > 1:
        extra["gpus"] = model_gpus(wildcards)
    if spec.verifiers:  # a verifier reads the thinking: records carry its text (rules/verify.smk)
        extra["thinking_text"] = True
    return json.dumps(
        {
            **extra,
            "dataset": wildcards.dataset,
            "model": model,
            "model_path": model_path(model, wildcards.bits),
            "bits": job.bits,
            # GPTQ and bf16 jobs keep the spec they had before other weight methods existed
            **({"weight_method": job.weight_method} if job.weight_method != weights.default_method(job.bits) else {}),
            "kv": wildcards.kv,
            "kv_settings": grid.kv_settings(config, wildcards.kv),
            "backend": spec.backend,
            "budgets": spec.budgets,
            "samples": spec.samples,
            "sampling": config["sampling"],
            "generation": grid.generation_settings(config, wildcards.dataset),
            "format_version": FORMAT_VERSION,
            "prompt_style": config["datasets"][wildcards.dataset].get("prompt_style", "default"),
        },
        sort_keys=True,
    )


def dataset_spec(wildcards):
    """Canonical JSON (sorted keys): params are compared as text, so key order must not
    make Snakemake think a dataset changed."""
    # how the generation jobs are split is no property of the questions
    return json.dumps({k: v for k, v in config["datasets"][wildcards.dataset].items() if k != "shards"},
                      sort_keys=True)


def generation_env(wildcards):
    """vLLM jobs and transformers jobs need different environments (their pins clash)."""
    return f"../envs/generate-{JOBS[job_of(wildcards)].backend}.yaml"


def generation_python(wildcards):
    backend = JOBS[job_of(wildcards)].backend
    return config["interpreters"][f"generate_{backend}"]


def job_ks(wildcards):
    return JOBS[job_of(wildcards)].ks


# ---------------------------------------------------------------- verifiers (Best-of-N, rules/verify.smk)
def built_verifiers():
    return [v for v, spec in config["verifiers"].items() if spec.get("build") == "tiny"]


def verify_files(wildcards):
    """The verify files a job's scoring reads: one per verifier a sweep of the job names."""
    job = job_of(wildcards)
    return [f"{RESULTS}/verify/{job.key}/{v}.jsonl" for v in JOBS[job].verifiers]


def verify_input(wildcards):
    inputs = {"questions": f"{RESULTS}/data/{wildcards.dataset}.jsonl", "generations": generation_files(wildcards)}
    found = checkpoint_inputs(config["verifiers"][wildcards.verifier]["source"], "verifiers", wildcards.verifier)
    return {**inputs, **{("verifier" if k == "model" else k): v for k, v in found.items()}}


@functools.lru_cache(maxsize=None)
def _verifier_gib(verifier):
    from notallbits.memory import prm_weight_bytes

    spec = config["verifiers"][verifier]
    if spec.get("build"):
        return 0.1
    for name in (spec["source"], verifier):
        try:
            return prm_weight_bytes(name) / GIB
        except UserError:
            continue
    return 15.0  # unknown: a 7B PRM


def verify_mem_mb(wildcards):
    return int(1024 * (4 + 1.25 * _verifier_gib(wildcards.verifier)))


def verify_runtime(wildcards):
    """Minutes: one forward of at most max_tokens (4,096 assumed) per record, at 200 TFLOP/s
    (bf16 prefill, 2 FLOP per parameter and token), plus 15 minutes of loading."""
    from notallbits.plan import question_count

    job = job_of(wildcards)
    spec = JOBS[job]
    records = question_count(config["datasets"][job.dataset]) * spec.samples * len(spec.budgets)
    tokens = records * (config["verifiers"][wildcards.verifier]["max_tokens"] or 4096)
    params = _verifier_gib(wildcards.verifier) * GIB / 2
    return capped(15 + 2 * params * tokens / 200e12 / 60)


def verify_spec(wildcards):
    """Everything that changes a job's verifier scores, as one canonical JSON param."""
    spec = config["verifiers"][wildcards.verifier]
    return json.dumps(
        {
            "verifier": wildcards.verifier,
            "format_version": VERIFY_FORMAT_VERSION,
            **{k: spec[k] for k in ("source", "aggregation", "max_tokens", "batch_size", "dtype")},
            "device": config["generation"]["device"],
            "prompt_style": config["datasets"][wildcards.dataset].get("prompt_style", "default"),
        },
        sort_keys=True,
    )


def score_files():
    return [f"{OUTPUT}/scores/{j.key}.csv" for j in JOBS]


def question_files():
    return [f"{OUTPUT}/scores/{j.key}.questions.csv" for j in JOBS]


def _wildcards_of(job):
    from types import SimpleNamespace

    return SimpleNamespace(dataset=job.dataset, model=job.model, bits=job.weights.tag, kv=job.kv)


def all_generation_files():
    """Every generation file of the config (run_info.json and the summary's provenance read their headers)."""
    return [f for j in JOBS for f in generation_files(_wildcards_of(j))]


def all_verify_files():
    return [f for j in JOBS for f in verify_files(_wildcards_of(j))]


def analysis_settings():
    """The bootstrap's settings, as one canonical JSON param (an edit reruns the analysis only)."""
    return json.dumps(config["analysis"], sort_keys=True)


from notallbits.figures import FIGURES, figures_for, shows_table1  # one plot rule per figure (rules/plot.smk)


def dataset_figures(dataset):
    """The figures a dataset's cells have the axes for (no KV figure with only the full cache, ...)."""
    return figures_for([spec for job, spec in JOBS.items() if job.dataset == dataset])


def all_targets():
    return (
        [f"{OUTPUT}/summary.csv", f"{OUTPUT}/analysis/thresholds.csv", f"{OUTPUT}/claims.csv",
         f"{OUTPUT}/run_info.json", f"{OUTPUT}/report.md"]
        + ([f"{OUTPUT}/figures/table1.png"] if shows_table1(config["models"]) else [])
        + [f"{OUTPUT}/figures/{fig}_{d}.png" for d in DATASETS for fig in dataset_figures(d)]
    )
