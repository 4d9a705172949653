# Frontiers per memory view, the computed threshold, and the best K per memory range.


rule analyze:
    input:
        summary=rules.aggregate.output.csv,
    output:
        frontier=report(f"{RESULTS}/analysis/frontier.csv", caption="../report/frontier.rst", category="Analysis"),
        thresholds=report(f"{RESULTS}/analysis/thresholds.csv", caption="../report/thresholds.rst", category="Analysis"),
        best_k=report(f"{RESULTS}/analysis/best_k.csv", caption="../report/best_k.rst", category="Analysis"),
        selection=report(f"{RESULTS}/analysis/selection.csv", caption="../report/selection.rst", category="Analysis"),
    log:
        f"{RESULTS}/logs/analyze.log",
    conda:
        "../envs/analysis.yaml"
    script:
        "../scripts/analyze.py"
