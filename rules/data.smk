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
    # shell, not script: an edited script reruns its rule, and new data would rerun every quantize and generate job
    shell:
        "python -m notallbits prepare-data --spec {params.spec:q} --out {output} > {log} 2>&1" + SHOW_ERROR
