# Figures, all drawn from the summary table: one rule per entry of notallbits.figures.FIGURES
# (plot_<name>), caption in report/<name>.rst. Cheap: they run where Snakemake runs.


for _figure in FIGURES:

    rule:
        name:
            f"plot_{_figure}"
        localrule: True
        input:
            summary=rules.aggregate.output.csv,
        output:
            report(f"figures/{_figure}_{{dataset}}.png", caption=f"../report/{_figure}.rst",
                   category="Figures", subcategory="{dataset}"),
        log:
            f"{RESULTS}/logs/plot/{_figure}_{{dataset}}.log",
        params:
            figure=_figure,
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
