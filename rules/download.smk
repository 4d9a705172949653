# What the jobs read from the Hugging Face hub, fetched where Snakemake runs (local rules: on a
# cluster, the login node): bf16 checkpoints and verifiers into the hub cache (hub.cache), the
# calibration corpus as a local file. Every other job runs with the hub offline. The datasets
# are fetched by prepare_data, also a local rule. `snakemake download` fetches everything.


rule download_checkpoint:
    output:
        f"{RESULTS}/downloads/{{kind}}/{{name}}.json",
    log:
        f"{RESULTS}/logs/download/{{kind}}/{{name}}.log",
    wildcard_constraints:
        kind="models|verifiers",
    localrule: True
    params:
        source=hub_source,
    conda:
        "../envs/analysis.yaml"
    shell:
        "python -m notallbits download checkpoint --source {params.source} --out {output} > {log} 2>&1" + SHOW_ERROR


rule download_calibration:
    output:
        f"{RESULTS}/downloads/calibration/{{corpus}}.jsonl",
    log:
        f"{RESULTS}/logs/download/calibration/{{corpus}}.log",
    wildcard_constraints:
        corpus="wikitext2|c4",
    localrule: True
    conda:
        "../envs/analysis.yaml"
    shell:
        "python -m notallbits download calibration --source {wildcards.corpus} --out {output} > {log} 2>&1" + SHOW_ERROR


rule download:
    input:
        download_targets(),
    localrule: True
