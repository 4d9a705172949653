# The one tidy table every figure, the report and the advisor read.


rule aggregate:
    input:
        score_files(),
    output:
        csv=report(f"{RESULTS}/summary.csv", caption="../report/summary.rst", category="Summary table"),
        parquet=f"{RESULTS}/summary.parquet",
    log:
        f"{RESULTS}/logs/aggregate.log",
    conda:
        "../envs/analysis.yaml"
    script:
        "../scripts/aggregate.py"
