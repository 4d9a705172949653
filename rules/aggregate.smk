# The one tidy table every figure, the report and the advisor read: a row per cell, with its
# accuracy's standard error and 95% interval over questions and the provenance of its job.


rule aggregate:
    input:
        scores=score_files(),
        questions=question_files(),
        generations=all_generation_files(),
    output:
        csv=report(f"{OUTPUT}/summary.csv", caption="../report/summary.rst", category="Summary table"),
        parquet=f"{OUTPUT}/summary.parquet",
        questions=f"{OUTPUT}/questions.parquet",
    log:
        f"{OUTPUT}/logs/aggregate.log",
    params:
        config_hash=provenance.config_sha256(config),
    conda:
        "../envs/analysis.yaml"
    script:
        "../scripts/aggregate.py"
