"""`fsd batch`: run a grid of `fsd` commands from one YAML sweep file, resumably and in shards; then read the sweep.

    sweep.py    the sweep file: validation, grid expansion, run folder names (slug + config hash)
    runner.py   shards (explicit, SLURM job arrays, torchrun) and the in-process runs (done.json / failed.json)
    commands.py the sweepable commands wired to the library: each run's config (from_flags, validate) and the call
                that runs it into its folder (the one the command makes); the sweep's checks build the same configs
    layout.py   the sweep folder: where each file lies, and the one reader of it (runs, done.json, outputs)
    table.py    a sweep's finished runs flattened into rows (one per run and entry of its metrics.json)
    gather.py   results.csv and summary_<metric>.png from those rows (and the report)
    report.py   `fsd report`: what the one-page HTML report of a run or a sweep shows; page.py: its HTML form
    table1.py   Table 1's numbers from compare-2d and gen-3d sweeps; table1_files.py writes them out
    viewer.py   `fsd view`: a run's or a sweep's Gaussian splats in the browser (viser)
    checks.py   user values in messages, bounded

The package does not import the CLI: a sweep's runs are configs and library calls, as the commands' own.
"""
