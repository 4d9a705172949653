# One GPU job per (dataset, model, bits, KV setting): one trace per sample to the largest
# budget serves every budget and K. The shell entry never changes; what changes results is
# in params.spec, so only jobs whose settings changed rerun.


rule generate:
    input:
        unpack(generate_input),
    output:
        f"{RESULTS}/generations/{{dataset}}/{{model}}/w{{bits}}/kv-{{kv}}.jsonl",
    log:
        f"{RESULTS}/logs/generate/{{dataset}}/{{model}}/w{{bits}}/kv-{{kv}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/generate/{{dataset}}/{{model}}/w{{bits}}/kv-{{kv}}.tsv"
    params:
        spec=generation_spec,
        python=generation_python,
        progress=f"{RESULTS}/progress/{{dataset}}/{{model}}/w{{bits}}/kv-{{kv}}",
    resources:
        gpu=model_gpus,
        mem_mb=gen_mem_mb,
        runtime=gen_runtime,
    conda:
        generation_env
    shell:
        "{params.python} -m notallbits generate --questions {input.questions} --spec {params.spec:q}"
        " --progress {params.progress} --out {output} > {log} 2>&1" + SHOW_ERROR


# One question shard of a job (datasets.<name>.shards, generation.shard_tokens): the same job on
# a slice of the questions, sharing the job's progress folder, so changing the shard count
# regenerates no finished question. score gathers the shards (generation_files).
use rule generate as generate_shard with:
    output:
        f"{RESULTS}/generations/{{dataset}}/{{model}}/w{{bits}}/kv-{{kv}}.shard{{shard}}.jsonl",
    log:
        f"{RESULTS}/logs/generate/{{dataset}}/{{model}}/w{{bits}}/kv-{{kv}}.shard{{shard}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/generate/{{dataset}}/{{model}}/w{{bits}}/kv-{{kv}}.shard{{shard}}.tsv"
