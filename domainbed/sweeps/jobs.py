"""A sweep's jobs: upstream's job (directory named by the md5 of its train args, command
string, three states), making and deleting job directories (torch-free)."""
import copy
import hashlib
import json
import os
import shlex
import shutil

import numpy as np

from domainbed.lib import jobdir
from domainbed.lib.progress import progress
from domainbed.sweeps.errors import SweepError
from domainbed.sweeps.launch_records import write_launch_record


class Job:
    NOT_LAUNCHED = "Not launched"
    INCOMPLETE = "Incomplete"
    DONE = "Done"

    def __init__(self, train_args, sweep_output_dir):
        args_str = json.dumps(train_args, sort_keys=True)
        args_hash = hashlib.md5(args_str.encode("utf-8")).hexdigest()
        self.output_dir = os.path.join(sweep_output_dir, args_hash)
        self.train_args = copy.deepcopy(train_args)
        self.train_args["output_dir"] = self.output_dir
        self.command_str = command_string(self.train_args)
        if os.path.exists(os.path.join(self.output_dir, "done")):
            self.state = Job.DONE
        elif os.path.exists(self.output_dir):
            self.state = Job.INCOMPLETE
        else:
            self.state = Job.NOT_LAUNCHED

    def __str__(self):
        info = (self.train_args["dataset"], self.train_args["algorithm"],
                self.train_args["test_envs"], self.train_args["hparams_seed"])
        return f"{self.state}: {self.output_dir} {info}"

    @staticmethod
    def launch(jobs, launcher_fn, launcher_name=None, launcher_args=None):
        """Make the job directories (recording the launcher), then hand the commands over."""
        check_not_foreign(jobs)
        print("Launching...")
        jobs = jobs.copy()
        np.random.shuffle(jobs)
        print("Making job directories:")
        for job in progress(jobs):
            try:
                os.makedirs(job.output_dir, exist_ok=True)
                if launcher_name is not None:
                    write_launch_record(job.output_dir, launcher_name)
            except OSError as e:
                raise SweepError(f"cannot make job directory {job.output_dir} "
                                 f"({e.strerror or e}); nothing was launched. Make the "
                                 "--output_dir writable (and free some space) and rerun") from None
        commands = [job.command_str for job in jobs]
        if launcher_args:
            launcher_fn(commands, **launcher_args)
        else:
            launcher_fn(commands)
        print(f"Launched {len(jobs)} jobs!")

    @staticmethod
    def delete(jobs):
        """Delete the jobs' directories, except those that started running meanwhile, and
        paths that are not job directories (a file, a symbolic link: left alone)."""
        print("Deleting...")
        deleted = 0
        for job in jobs:
            path = job.output_dir
            if os.path.islink(path) or not os.path.isdir(path):
                kind = "a symbolic link" if os.path.islink(path) else "not a directory"
                print(f"Not deleted ({kind}; remove it by hand if it is not needed): {path}")
                continue
            if jobdir.foreign_files(path):
                print(f"Not deleted (not written by sweep or train.py: no job.json, "
                      f"launch.json or records; remove it by hand if it is not needed): {path}")
                continue
            try:
                try:
                    with jobdir.JobLock(path):
                        shutil.rmtree(path)
                except jobdir.JobLockError:
                    if jobdir.is_running(path):   # (a live job on another host)
                        raise jobdir.JobRunningError(path) from None
                    shutil.rmtree(path)           # e.g. `.lock` is a directory: nobody holds it
                deleted += 1
            except jobdir.JobRunningError:
                print(f"Not deleted (started running meanwhile): {path}")
            except OSError as e:
                print(f"Not deleted ({e.strerror or e}): {path}")
        print(f"Deleted {deleted} jobs!")


def check_not_foreign(jobs):
    """A job directory that holds files we would write but nothing of ours is somebody
    else's: refused before any directory is made."""
    for job in jobs:
        foreign = jobdir.foreign_files(job.output_dir)
        if foreign:
            raise SweepError(jobdir.foreign_directory_message(
                job.output_dir, foreign, writer="sweep or train.py") + "; nothing was launched")


def command_string(train_args):
    """`python -m domainbed.scripts.train --key value ...` in sorted key order."""
    command = ["python", "-m", "domainbed.scripts.train"]
    for key, value in sorted(train_args.items()):
        if isinstance(value, list):
            value = " ".join(str(v) for v in value)
        elif isinstance(value, str):
            value = shlex.quote(value)
        command.append(f"--{key} {value}")
    return " ".join(command)

