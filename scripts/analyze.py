from notallbits.analysis import write_analysis
from notallbits.cli import step

step(snakemake.log[0], write_analysis, snakemake.input.summary, snakemake.output.frontier,
     snakemake.output.thresholds, snakemake.output.best_k, snakemake.output.selection)
