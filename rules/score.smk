# pass@1 and exact Maj@K per (budget, K) of one generation job; with a verifier, exact Best-of-N too.
# Scores are this config's own (its output folder): its K set is a param of the step.


rule score:
    input:
        questions=f"{RESULTS}/data/{{dataset}}.jsonl",
        generations=generation_files,
        verifications=verify_files,
    output:
        scores=f"{OUTPUT}/scores/{{dataset}}/{{model}}/w{{bits}}/kv-{{kv}}.csv",
        samples=f"{OUTPUT}/scores/{{dataset}}/{{model}}/w{{bits}}/kv-{{kv}}.samples.csv",
    log:
        f"{OUTPUT}/logs/score/{{dataset}}/{{model}}/w{{bits}}/kv-{{kv}}.log",
    params:
        ks=job_ks,
        code_sandbox=config["scoring"]["code_sandbox"],
    conda:
        "../envs/analysis.yaml"
    script:
        "../scripts/score.py"


# Each row's per-question scores (pass@1, exact Maj@K, exact Best-of-N of every question), whose
# spread is the row's standard error and whose resampling is the bootstrap (notallbits/stats.py).
rule question_scores:
    input:
        questions=f"{RESULTS}/data/{{dataset}}.jsonl",
        samples=rules.score.output.samples,
        scores=rules.score.output.scores,
        verifications=verify_files,
    output:
        f"{OUTPUT}/scores/{{dataset}}/{{model}}/w{{bits}}/kv-{{kv}}.questions.csv",
    log:
        f"{OUTPUT}/logs/question_scores/{{dataset}}/{{model}}/w{{bits}}/kv-{{kv}}.log",
    params:
        ks=job_ks,
    conda:
        "../envs/analysis.yaml"
    script:
        "../scripts/question_scores.py"
