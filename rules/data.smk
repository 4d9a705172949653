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
    script:
        "../scripts/prepare_data.py"
