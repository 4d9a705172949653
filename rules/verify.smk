# Best-of-N's verifier: a process reward model scores every stored sample's steps (one GPU job
# per generation job and verifier); scoring then picks the best-scored of N samples.


rule build_tiny_prm:
    output:
        directory(f"{RESULTS}/verifiers/{{verifier}}"),
    log:
        f"{RESULTS}/logs/build_tiny_prm/{{verifier}}.log",
    wildcard_constraints:
        verifier=_alternatives(built_verifiers()) or "^$",
    params:
        python=config["interpreters"]["verify"],
    conda:
        "../envs/verify.yaml"
    shell:
        "{params.python} -m notallbits verify --build-tiny {output} > {log} 2>&1" + SHOW_ERROR


rule verify:
    input:
        unpack(verify_input),
    output:
        f"{RESULTS}/verify/{{dataset}}/{{model}}/w{{bits}}/kv-{{kv}}/{{verifier}}.jsonl",
    log:
        f"{RESULTS}/logs/verify/{{dataset}}/{{model}}/w{{bits}}/kv-{{kv}}/{{verifier}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/verify/{{dataset}}/{{model}}/w{{bits}}/kv-{{kv}}/{{verifier}}.tsv"
    params:
        spec=verify_spec,
        python=config["interpreters"]["verify"],
    resources:
        gpu=1,
        mem_mb=verify_mem_mb,
        runtime=verify_runtime,
    conda:
        "../envs/verify.yaml"
    shell:
        "{params.python} -m notallbits verify --questions {input.questions} --generations {input.generations}"
        " --spec {params.spec:q} --out {output} > {log} 2>&1" + SHOW_ERROR
