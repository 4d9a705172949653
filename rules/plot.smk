# Figures, one rule each, all drawn from the summary table; captions in report/.


rule plot_accuracy_vs_memory:
    input:
        summary=rules.aggregate.output.csv,
    output:
        report("figures/accuracy_vs_memory_{dataset}.png", caption="../report/accuracy_vs_memory.rst",
               category="Figures", subcategory="{dataset}"),
    log:
        f"{RESULTS}/logs/plot/accuracy_vs_memory_{{dataset}}.log",
    params:
        figure="accuracy_vs_memory",
    conda:
        "../envs/analysis.yaml"
    script:
        "../scripts/plot.py"


rule plot_pareto_choices:
    input:
        summary=rules.aggregate.output.csv,
    output:
        report("figures/pareto_choices_{dataset}.png", caption="../report/pareto_choices.rst",
               category="Figures", subcategory="{dataset}"),
    log:
        f"{RESULTS}/logs/plot/pareto_choices_{{dataset}}.log",
    params:
        figure="pareto_choices",
    conda:
        "../envs/analysis.yaml"
    script:
        "../scripts/plot.py"


rule plot_parallel_scaling:
    input:
        summary=rules.aggregate.output.csv,
    output:
        report("figures/parallel_scaling_{dataset}.png", caption="../report/parallel_scaling.rst",
               category="Figures", subcategory="{dataset}"),
    log:
        f"{RESULTS}/logs/plot/parallel_scaling_{{dataset}}.log",
    params:
        figure="parallel_scaling",
    conda:
        "../envs/analysis.yaml"
    script:
        "../scripts/plot.py"


rule plot_latency_vs_accuracy:
    input:
        summary=rules.aggregate.output.csv,
    output:
        report("figures/latency_vs_accuracy_{dataset}.png", caption="../report/latency_vs_accuracy.rst",
               category="Figures", subcategory="{dataset}"),
    log:
        f"{RESULTS}/logs/plot/latency_vs_accuracy_{{dataset}}.log",
    params:
        figure="latency_vs_accuracy",
    conda:
        "../envs/analysis.yaml"
    script:
        "../scripts/plot.py"


rule plot_throughput_vs_accuracy:
    input:
        summary=rules.aggregate.output.csv,
    output:
        report("figures/throughput_vs_accuracy_{dataset}.png", caption="../report/throughput_vs_accuracy.rst",
               category="Figures", subcategory="{dataset}"),
    log:
        f"{RESULTS}/logs/plot/throughput_vs_accuracy_{{dataset}}.log",
    params:
        figure="throughput_vs_accuracy",
    conda:
        "../envs/analysis.yaml"
    script:
        "../scripts/plot.py"


rule plot_kv_methods:
    input:
        summary=rules.aggregate.output.csv,
    output:
        report("figures/kv_methods_{dataset}.png", caption="../report/kv_methods.rst",
               category="Figures", subcategory="{dataset}"),
    log:
        f"{RESULTS}/logs/plot/kv_methods_{{dataset}}.log",
    params:
        figure="kv_methods",
    conda:
        "../envs/analysis.yaml"
    script:
        "../scripts/plot.py"


rule table1:
    output:
        csv=report("figures/table1.csv", caption="../report/table1.rst", category="Memory model"),
        png=report("figures/table1.png", caption="../report/table1.rst", category="Memory model"),
    log:
        f"{RESULTS}/logs/plot/table1.log",
    conda:
        "../envs/analysis.yaml"
    script:
        "../scripts/table1.py"
