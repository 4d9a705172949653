from notallbits.cli import step
from notallbits.stats import score_with_questions

step(snakemake.log[0], score_with_questions, snakemake.input.questions, snakemake.input.generations,
     list(snakemake.params.ks), snakemake.output.scores, snakemake.output.samples, snakemake.output.questions,
     list(snakemake.input.get("verifications", [])), snakemake.params.code_sandbox)
