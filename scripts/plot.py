from notallbits.cli import step
from notallbits.figures import plot_from_summary

step(snakemake.log[0], plot_from_summary, snakemake.params.figure, snakemake.input.summary,
     snakemake.output[0], dataset=snakemake.wildcards.dataset)
