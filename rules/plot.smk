# Figures, all drawn from the summary table.


rule plot_accuracy_vs_memory:
    input:
        summary=rules.aggregate.output.csv,
    output:
        "figures/accuracy_vs_memory_{dataset}.png",
    log:
        f"{RESULTS}/logs/plot/accuracy_vs_memory_{{dataset}}.log",
    conda:
        "../envs/analysis.yaml"
    script:
        "../scripts/plot_accuracy_vs_memory.py"
