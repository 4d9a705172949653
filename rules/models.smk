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
    conda:
        "../envs/generate-transformers.yaml"
    shell:
        "{params.python} -m notallbits tiny-model {output} > {log} 2>&1" + SHOW_ERROR


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
        group_size=config["quantization"]["group_size"],
        desc_act="--desc-act" if config["quantization"]["desc_act"] else "",
        calibration=lambda w, input: f"--calibration {input.calibration}" if "calibration" in input.keys() else "",
        samples=config["quantization"]["calibration_samples"],
        style=calibration_style,
    resources:
        gpu=1,
        mem_mb=quantize_mem_mb,
        runtime=quantize_runtime,
    conda:
        "../envs/quantize.yaml"
    shell:
        "{params.python} -m notallbits quantize --model {params.source} --bits {wildcards.qbits}"
        " --group-size {params.group_size} {params.desc_act} {params.calibration}"
        " --calibration-samples {params.samples} --prompt-style {params.style} --out {output} > {log} 2>&1" + SHOW_ERROR
