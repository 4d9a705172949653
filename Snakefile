# notallbits: quantize -> generate -> score -> aggregate -> plot.
# A table of contents only; helpers live in rules/common.smk, logic in the notallbits package.
from snakemake.utils import min_version

from notallbits.grid import exit_on_bad_yaml

min_version("9.0")


# The paper grid by default. A --configfile (the demo, your own grid) replaces it instead of
# being merged into it: a merge would leak the paper's models, KV methods and vLLM backend.
if not workflow.overwrite_configfiles:
    # Snakemake's own YAML error names neither the file nor the line (nor can a --configfile
    # be checked here: Snakemake reads it before this file; `notallbits plan FILE` gives the line)
    exit_on_bad_yaml("config.yaml")

    configfile: "config.yaml"


report: "report/workflow.rst"


include: "rules/common.smk"
include: "rules/models.smk"
include: "rules/data.smk"
include: "rules/download.smk"
include: "rules/generate.smk"
include: "rules/verify.smk"
include: "rules/score.smk"
include: "rules/aggregate.smk"
include: "rules/analysis.smk"
include: "rules/plot.smk"
include: "rules/report.smk"


# Cheap steps run where Snakemake runs (also on a cluster's login node); only model
# building, quantization and generation are submitted to a scheduler. The plot rules,
# made in a loop over the figure list, say so themselves (localrule: True).
localrules:
    all,
    prepare_data,
    score,
    aggregate,
    analyze,
    table1,
    run_info,
    results_report,


rule all:
    default_target: True
    input:
        all_targets(),
