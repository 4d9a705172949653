import json

from notallbits.cli import step
from notallbits.data.prepare import prepare

step(snakemake.log[0], prepare, json.loads(snakemake.params.spec), snakemake.output[0])
