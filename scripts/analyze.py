import json

from notallbits.analysis import write_analysis
from notallbits.cli import step

settings = json.loads(snakemake.params.settings)
step(snakemake.log[0], write_analysis, snakemake.input.summary, snakemake.output.frontier,
     snakemake.output.thresholds, snakemake.output.best_k, snakemake.output.selection,
     questions_path=snakemake.input.questions, frontier_bootstrap_path=snakemake.output.frontier_bootstrap,
     threshold_bootstrap_path=snakemake.output.threshold_bootstrap, claims_path=snakemake.output.claims,
     replicates=settings["bootstrap_replicates"], seed=settings["seed"])
