# pass@1 and exact Maj@K per (budget, K) of one generation job; with a verifier, exact Best-of-N too.


rule score:
    input:
        questions=f"{RESULTS}/data/{{dataset}}.jsonl",
        generations=generation_files,
        verifications=verify_files,
    output:
        scores=f"{RESULTS}/scores/{{dataset}}/{{model}}/w{{bits}}/kv-{{kv}}.csv",
        samples=f"{RESULTS}/scores/{{dataset}}/{{model}}/w{{bits}}/kv-{{kv}}.samples.csv",
    log:
        f"{RESULTS}/logs/score/{{dataset}}/{{model}}/w{{bits}}/kv-{{kv}}.log",
    params:
        ks=job_ks,
        code_sandbox=config["scoring"]["code_sandbox"],
    conda:
        "../envs/analysis.yaml"
    script:
        "../scripts/score.py"
