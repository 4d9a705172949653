from notallbits import grid
from notallbits.cli import step
from notallbits.provenance import write_run_info

step(snakemake.log[0], write_run_info, snakemake.output[0], grid.validate(dict(snakemake.config)),
     snakemake.params.configfile, snakemake.params.commit, list(snakemake.input.generations),
     list(snakemake.input.verifications))
