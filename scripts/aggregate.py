from notallbits.aggregate import write_summary
from notallbits.cli import step

step(snakemake.log[0], write_summary, list(snakemake.input), snakemake.output.csv, snakemake.output.parquet)
