from notallbits.cli import step
from notallbits.runreport import write_report

step(snakemake.log[0], write_report, snakemake.output[0], snakemake.input.summary,
     snakemake.input.threshold_bootstrap, snakemake.input.claims, snakemake.input.frontier_bootstrap,
     title=snakemake.params.title)
