"""Sweeps as a library: the jobs of a hyperparameter sweep, and the commands launch,
delete_incomplete and status (torch-free).

    python -m domainbed.scripts.sweep launch --data_dir D --output_dir O --command_launcher local

Modules (each imports only those listed before it): `errors` (SweepError),
`launch_records` (launch.json), `jobs` (Job: hash, command string, states; making and
deleting directories), `job_list` (upstream's enumeration), `status` (detailed states,
progress, ETA), `checks` (names, jobs, launcher options), `best_hparams`
(--best_hparams_from), `commands` (`run_sweep(args)`: the commands). `scripts/sweep.py` is
the command line over `run_sweep`.

The job list, the job directories (md5 of the train args), the command strings, the states
and the printed lines are upstream DomainBed's. What this version adds:

* Liveness. A job whose `.lock` is held by a train.py (or whose heartbeat.json, from another
  host, is fresh) is running: `delete_incomplete` never deletes it, and says so.
* Relaunch after an interruption. `launch` writes `launch.json` ({"launcher", "time", "pid",
  "host", "pid_start"}: which launcher, and which `sweep launch` process) into every job
  directory it launches. A job that a still-running `sweep launch` has not started yet is
  Queued, not Interrupted. A later `launch` with the same arguments launches the
  Not-launched jobs, as upstream, and also every Incomplete job that is not running, has no
  `failed` file, and was launched by a launcher that really runs jobs (not `dummy`; for a
  queueing launcher such as `slurm`, only once the job has started at least once).
  train.py resumes such a job from its checkpoint, and refuses to run twice at the same time,
  so killing `sweep launch` and running it again finishes the sweep with nothing lost, nothing
  run twice and no duplicate records. Failed jobs are left alone: inspect them, then
  `delete_incomplete` and `launch` (upstream's recovery) to start them over.
* `status`: each job's state (Done, Running, Failed, Queued, Interrupted, Not started,
  Incomplete, Not launched) with its progress from heartbeat.json, then a summary with an
  ETA, and a note when the directory holds jobs of a launch with other arguments. Garbage in a
  job directory (heartbeat, launch.json, `.lock` as a directory, a file where a job
  directory should be) reads as "nothing there", never as a crash.
* Validation. `launch` checks every job's train arguments and the --hparams overrides
  (names, types, ranges; lib/validation.py and hparams_registry.apply_overrides, the same
  checks as train.py), and each dataset's own checks of its arguments and data (for
  `Folder`, the tree or manifest under --data_dir), before it makes a single job directory.
* `--selection_method M [M ...]`: only the jobs these model-selection methods read (every
  single test env for training-domain validation and the oracle; the pairs too for
  leave-one-domain-out). The kept jobs are the full sweep's, with the same directories, so
  a later sweep without the flag launches only the rest. Every command takes the flag, and
  sees the same jobs with it.
* `--best_hparams_from DIR`: for every selection method (default: collect_results' three),
  dataset, algorithm and test env of the finished sweep DIR, the hparams the method selected
  there, run for --n_trials trials as the jobs a hand-written sweep with `--n_hparams_from S
  --n_hparams S+1 --hparams '<those hparams>'` lists, in OUTPUT_DIR/<method> (one sweep
  directory per method, so that collect_results reports each method's own choice).
"""
