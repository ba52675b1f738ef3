"""The job's directory as train.py takes it: the lock (a refused job leaves no trace) and
the check that the directory holds this job (or nothing yet)."""
from domainbed.lib import jobdir
from domainbed.training.errors import BadInput


class JobDirectoryLock:
    """`with JobDirectoryLock(config) as lock:` holds the job's lock (made in the directory,
    which is created if needed) and checks that the directory is this job's. Until
    `lock.keep()` (the job is accepted) a refusal removes what the lock made, so a
    refused job leaves no trace."""

    def __init__(self, config):
        self.config = config
        self.lock = jobdir.JobLock(config.output_dir)
        self.kept = False

    def __enter__(self):
        output_dir = self.config.output_dir
        try:   # a refused job changes no file; a live one is a JobRunningError (a BadInput)
            self.lock.acquire(write_holder=False)
        except jobdir.JobLockError as e:
            raise BadInput(e.strerror) from None
        except OSError as e:
            raise BadInput(f"cannot use --output_dir {output_dir} ({e.strerror}); "
                           f"choose a writable directory") from None
        return self

    def is_done(self):
        """Refuse a directory of another job (a JobIdentityError, a BadInput); True when
        this job is already done."""
        jobdir.check_job_identity(self.config.output_dir, self.config.identity())
        return jobdir.is_done(self.config.output_dir)

    def keep(self):
        self.kept = True
        self.lock.write_holder()

    def __exit__(self, *exc):
        self.lock.release(remove_created=not self.kept)
        return False


def already_done_message(output_dir):
    return (f"train.py: {output_dir} is already done (see its results.jsonl); nothing to do. "
            f"Delete that directory to run the job again.")
