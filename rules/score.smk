# pass@1 and exact Maj@K per (budget, K) of one generation job; with a verifier, exact Best-of-N too;
# and the same per question.
# Scores are this config's own (its output folder): its K set is a param of the step.


rule score:
    input:
        questions=f"{RESULTS}/data/{{dataset}}.jsonl",
        generations=generation_files,
        verifications=verify_files,
    output:
        scores=f"{OUTPUT}/scores/{{dataset}}/{{model}}/w{{bits}}/kv-{{kv}}.csv",
        samples=f"{OUTPUT}/scores/{{dataset}}/{{model}}/w{{bits}}/kv-{{kv}}.samples.csv",
        # each row's per-question scores: their spread is its standard error, their resampling the
        # bootstrap (notallbits/stats.py)
        questions=f"{OUTPUT}/scores/{{dataset}}/{{model}}/w{{bits}}/kv-{{kv}}.questions.csv",
    log:
        f"{OUTPUT}/logs/score/{{dataset}}/{{model}}/w{{bits}}/kv-{{kv}}.log",
    params:
        ks=job_ks,
        code_sandbox=config["scoring"]["code_sandbox"],
        verdict_version=VERDICT_VERSION,
    conda:
        "../envs/analysis.yaml"
    script:
        "../scripts/score.py"
