# Figures, all drawn from the summary table: one rule per entry of notallbits.figures.FIGURES
# (plot_<name>), caption in report/<name>.rst. Cheap: they run where Snakemake runs. The targets
# are only the figures a dataset's cells have the axes for (common.smk dataset_figures).


for _figure in FIGURES:

    rule:
        name:
            f"plot_{_figure}"
        localrule: True
        input:
            summary=rules.aggregate.output.csv,
        output:
            report(f"{OUTPUT}/figures/{_figure}_{{dataset}}.png", caption=f"../report/{_figure}.rst",
                   category="Figures", subcategory="{dataset}"),
        log:
            f"{OUTPUT}/logs/plot/{_figure}_{{dataset}}.log",
        params:
            figure=_figure,
        conda:
            "../envs/analysis.yaml"
        script:
            "../scripts/plot.py"


# the paper's Table 1 (Qwen3 weights and KV cache from the memory model): drawn for configs with a Qwen3 model
rule table1:
    output:
        csv=report(f"{OUTPUT}/figures/table1.csv", caption="../report/table1.rst", category="Memory model"),
        png=report(f"{OUTPUT}/figures/table1.png", caption="../report/table1.rst", category="Memory model"),
    log:
        f"{OUTPUT}/logs/plot/table1.log",
    conda:
        "../envs/analysis.yaml"
    script:
        "../scripts/table1.py"
