# The run's record and its results in a few tables: run_info.json (commit, versions, config and
# its hash, seeds, date, each job's hardware) and report.md, printed when the workflow finishes.


# Written with the summary it describes (the commit is the checkout's when it is written), so a
# commit that changes nothing reruns nothing.
rule run_info:
    input:
        summary=rules.aggregate.output.csv,
        generations=all_generation_files(),
        verifications=all_verify_files(),
    output:
        f"{OUTPUT}/run_info.json",
    log:
        f"{OUTPUT}/logs/run_info.log",
    params:
        config_hash=provenance.config_sha256(config),
        configfile=CONFIGFILE,
    conda:
        "../envs/analysis.yaml"
    script:
        "../scripts/run_info.py"


rule results_report:
    input:
        summary=rules.aggregate.output.csv,
        frontier_bootstrap=rules.analyze.output.frontier_bootstrap,
        threshold_bootstrap=rules.analyze.output.threshold_bootstrap,
        claims=rules.analyze.output.claims,
    output:
        report(f"{OUTPUT}/report.md", caption="../report/results.rst", category="Summary table"),
    log:
        f"{OUTPUT}/logs/results_report.log",
    params:
        title=OUTPUT,
    conda:
        "../envs/analysis.yaml"
    script:
        "../scripts/results_report.py"


onsuccess:
    from notallbits.runreport import print_summary

    print_summary(OUTPUT)
