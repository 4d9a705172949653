from notallbits.cli import step
from notallbits.figures import write_table1

step(snakemake.log[0], write_table1, snakemake.output.csv, snakemake.output.png)
