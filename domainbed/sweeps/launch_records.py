"""`launch.json`: which launcher, and which `sweep launch` process, launched a job
directory; whether that process still runs (torch-free)."""
import json
import os
import socket
import time

from domainbed.lib import jobdir

LAUNCH_FILE = "launch.json"



def _process_start_ticks(pid):
    """When process `pid` started (clock ticks since boot, Linux), or None."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return int(f.read().rsplit(")", 1)[1].split()[19])
    except (OSError, ValueError, IndexError):
        return None



def write_launch_record(output_dir, launcher_name):
    record = {"launcher": launcher_name, "time": time.time(), "pid": os.getpid(),
              "host": socket.gethostname(), "pid_start": _process_start_ticks(os.getpid())}
    jobdir.atomic_write_bytes(os.path.join(output_dir, LAUNCH_FILE),
                              (json.dumps(record) + "\n").encode())



def read_launch_record(output_dir):
    """launch.json as a dict whose "launcher" is a name, or None (missing, garbage)."""
    record = jobdir.read_small_json(os.path.join(output_dir, LAUNCH_FILE))
    if not isinstance(record, dict) or not isinstance(record.get("launcher"), str):
        return None
    return record



def launcher_is_alive(record):
    """Whether the `sweep launch` process that wrote this launch.json still runs (on this
    host; one on another host cannot be seen, and counts as gone)."""
    pid, host = record.get("pid"), record.get("host")
    if not isinstance(pid, int) or isinstance(pid, bool) or pid <= 0 or host != socket.gethostname():
        return False
    ticks = _process_start_ticks(pid)
    if ticks is not None or os.path.isdir("/proc"):
        return ticks is not None and ticks == record.get("pid_start")
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:
        return True
    return True

