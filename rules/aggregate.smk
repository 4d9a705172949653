# The one tidy table every figure, the report and the advisor read.


rule aggregate:
    input:
        score_files(),
    output:
        csv=f"{RESULTS}/summary.csv",
        parquet=f"{RESULTS}/summary.parquet",
    log:
        f"{RESULTS}/logs/aggregate.log",
    conda:
        "../envs/analysis.yaml"
    script:
        "../scripts/aggregate.py"
