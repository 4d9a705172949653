# notallbits: quantize -> generate -> score -> aggregate -> plot.
# A table of contents only; helpers live in rules/common.smk, logic in the notallbits package.
from snakemake.utils import min_version

min_version("9.0")


configfile: "config.yaml"


report: "report/workflow.rst"


include: "rules/common.smk"
include: "rules/models.smk"
include: "rules/data.smk"
include: "rules/generate.smk"
include: "rules/score.smk"
include: "rules/aggregate.smk"
include: "rules/analysis.smk"
include: "rules/plot.smk"


rule all:
    default_target: True
    input:
        all_targets(),
