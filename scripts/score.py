from notallbits.cli import step
from notallbits.scoring.command import score_file

step(snakemake.log[0], score_file, snakemake.input.questions, snakemake.input.generations,
     list(snakemake.params.ks), snakemake.output.scores, snakemake.output.samples,
     list(snakemake.input.get("verifications", [])), snakemake.params.code_sandbox)
