# Checkpoints: the tiny test model is built here; 4/8-bit GPTQ checkpoints are quantized here.
# 16-bit cells read the bf16 checkpoint directly (no job).


rule build_tiny_model:
    output:
        directory(f"{RESULTS}/models/{{model}}/w16"),
    log:
        f"{RESULTS}/logs/build_tiny_model/{{model}}.log",
    wildcard_constraints:
        model=_alternatives(built_models("tiny")) or "^$",
    params:
        python=config["interpreters"]["generate_transformers"],
        family=lambda w: config["models"][w.model]["family"],
    conda:
        "../envs/generate-transformers.yaml"
    shell:
        "{params.python} -m notallbits tiny-model {output} --family {params.family} > {log} 2>&1" + SHOW_ERROR


rule train_toy:
    output:
        directory("models/toy/{model}"),
    log:
        f"{RESULTS}/logs/train_toy/{{model}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/train_toy/{{model}}.tsv"
    wildcard_constraints:
        model=_alternatives(built_models("toy")) or "^$",
    params:
        python=config["interpreters"]["generate_transformers"],
    resources:
        mem_mb=4000,
        runtime=30,
    conda:
        "../envs/generate-transformers.yaml"
    shell:
        "{params.python} -m notallbits train-toy --size {wildcards.model} --out {output} > {log} 2>&1" + SHOW_ERROR


rule quantize:
    input:
        unpack(quantize_input),
    output:
        directory(f"{RESULTS}/models/{{model}}/w{{qbits}}"),
    log:
        f"{RESULTS}/logs/quantize/{{model}}/w{{qbits}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/quantize/{{model}}/w{{qbits}}.tsv"
    params:
        python=config["interpreters"]["quantize"],
        source=bf16_source,
        settings=quantize_settings,
        calibration=calibration_file_arg,
    resources:
        gpu=1,
        mem_mb=quantize_mem_mb,
        runtime=quantize_runtime,
    conda:
        "../envs/quantize.yaml"
    shell:
        "{params.python} -m notallbits quantize --model {params.source} --bits {wildcards.qbits}"
        " --settings {params.settings:q} {params.calibration} --out {output} > {log} 2>&1" + SHOW_ERROR


# quantization.calibration.source: traces — the bf16 model's own reasoning on a dataset no sweep evaluates
rule calibration_traces:
    input:
        unpack(calibration_traces_input),
    output:
        f"{RESULTS}/calibration/{{model}}/traces.jsonl",
    log:
        f"{RESULTS}/logs/calibration_traces/{{model}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/calibration_traces/{{model}}.tsv"
    params:
        python=config["interpreters"]["generate_transformers"],
        spec=calibration_traces_spec,
    resources:
        gpu=1,
        mem_mb=gen_mem_mb,
        runtime=quantize_runtime,
    conda:
        "../envs/generate-transformers.yaml"
    shell:
        "{params.python} -m notallbits calibration-traces --questions {input.questions} --spec {params.spec:q}"
        " --out {output} > {log} 2>&1" + SHOW_ERROR
