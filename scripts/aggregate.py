from notallbits.aggregate import write_summary
from notallbits.cli import step

step(snakemake.log[0], write_summary, list(snakemake.input.scores), snakemake.output.csv, snakemake.output.parquet,
     question_paths=list(snakemake.input.questions), generation_paths=list(snakemake.input.generations),
     questions_out=snakemake.output.questions, config_hash=snakemake.params.config_hash)
