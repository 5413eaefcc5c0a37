"""`fsd batch`: run a grid of `fsd` commands from one YAML sweep file, resumably and in shards.

    sweep.py    the sweep file: validation, grid expansion, run folder names (slug + config hash)
    runner.py   shards (explicit, SLURM job arrays, torchrun) and the in-process runs (done.json / failed.json)
    gather.py   results.csv and summary_<metric>.png from the finished runs

The package does not import the CLI: the caller passes the click group of the `fsd` app
(`typer.main.get_command(app)`), whose commands are both validated against and invoked.
"""
