from pathlib import Path

from notallbits import grid
from notallbits.cli import step
from notallbits.provenance import git_commit, write_run_info

step(snakemake.log[0], write_run_info, snakemake.output[0], grid.validate(dict(snakemake.config)),
     snakemake.params.configfile, git_commit(Path(snakemake.scriptdir).parent), list(snakemake.input.generations),
     list(snakemake.input.verifications))
