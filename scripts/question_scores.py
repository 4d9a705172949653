from notallbits.cli import step
from notallbits.stats import write_question_scores

step(snakemake.log[0], write_question_scores, snakemake.input.questions, snakemake.input.samples,
     snakemake.input.scores, list(snakemake.params.ks), snakemake.output[0], list(snakemake.input.verifications))
