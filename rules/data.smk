# Datasets as normalized JSONL (id, task, question, choices, answer, permutation).


rule prepare_data:
    output:
        f"{RESULTS}/data/{{dataset}}.jsonl",
    log:
        f"{RESULTS}/logs/prepare_data/{{dataset}}.log",
    params:
        spec=dataset_spec,
    conda:
        "../envs/analysis.yaml"
    shell:  # a stable entry: an edit to the package must not rewrite the data and so rerun every generation
        "python -m notallbits prepare-data --spec {params.spec:q} --out {output} > {log} 2>&1" + SHOW_ERROR
