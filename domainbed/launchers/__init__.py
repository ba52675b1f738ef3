"""Command launchers: functions that run (or submit) a sweep's train commands.

`command_launchers` holds the registry (`REGISTRY`, `register_launcher`) and the built-in
`local`, `dummy`, `multi_gpu` and `slurm` launchers; `pool` the `pool` launcher (warm worker
processes). `domainbed.command_launchers` and `domainbed.pool_launcher`, upstream's and our
earlier import paths, are these same modules. Torch-free (the pool's workers import it).
"""
