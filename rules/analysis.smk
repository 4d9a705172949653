# Frontiers per memory view, the computed threshold, the best K per memory range; a bootstrap
# over questions of the frontier and the threshold; the paper's claims checked on this run.


rule analyze:
    input:
        summary=rules.aggregate.output.csv,
        questions=rules.aggregate.output.questions,
    output:
        frontier=report(f"{OUTPUT}/analysis/frontier.csv", caption="../report/frontier.rst", category="Analysis"),
        thresholds=report(f"{OUTPUT}/analysis/thresholds.csv", caption="../report/thresholds.rst", category="Analysis"),
        best_k=report(f"{OUTPUT}/analysis/best_k.csv", caption="../report/best_k.rst", category="Analysis"),
        selection=report(f"{OUTPUT}/analysis/selection.csv", caption="../report/selection.rst", category="Analysis"),
        frontier_bootstrap=report(f"{OUTPUT}/analysis/frontier_bootstrap.csv", caption="../report/frontier_bootstrap.rst",
                                  category="Analysis"),
        threshold_bootstrap=report(f"{OUTPUT}/analysis/threshold_bootstrap.csv",
                                   caption="../report/threshold_bootstrap.rst", category="Analysis"),
        claims=report(f"{OUTPUT}/claims.csv", caption="../report/claims.rst", category="Claims"),
    log:
        f"{OUTPUT}/logs/analyze.log",
    params:
        settings=analysis_settings(),
    conda:
        "../envs/analysis.yaml"
    script:
        "../scripts/analyze.py"
