"""A real single-node Slurm cluster for the cluster tests: munged, slurmctld and slurmd started by hand (there
is no systemd), a generated ``slurm.conf`` in a temporary folder, loopback only, no accounting, two fake GPUs
(gres on character devices). CI installs Debian's ``slurmctld slurmd slurm-client munge`` (``.ci/run``).

``python -m tests.search.slurm_cluster`` checks the setup: it starts the cluster, runs one job and one array
task with a GPU, stops it, and says how long that took.
"""

from __future__ import annotations

import os
import select
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BINARIES = ("slurmctld", "slurmd", "sbatch", "squeue", "scontrol", "scancel", "munged")
TIMEOUT = 60  # seconds any one Slurm command or wait may take


def installed() -> bool:
    return all(shutil.which(b) or Path("/usr/sbin", b).exists() for b in BINARIES)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _conf(base: Path, node: str, ctld_port: int, slurmd_port: int) -> str:
    return f"""\
ClusterName=stt-test
SlurmctldHost={node}(127.0.0.1)
SlurmctldPort={ctld_port}
SlurmdPort={slurmd_port}
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
# a requeued job waits this long before it may start again (default 120 s)
AuthInfo=cred_expire=10
StateSaveLocation={base}/state
SlurmdSpoolDir={base}/spool
SlurmctldPidFile={base}/slurmctld.pid
SlurmdPidFile={base}/slurmd.pid
SlurmctldLogFile={base}/slurmctld.log
SlurmdLogFile={base}/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
SlurmdParameters=config_overrides
DefMemPerCPU=500
GresTypes=gpu
ReturnToService=2
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
SchedulerType=sched/backfill
MpiDefault=none
KillWait=30
MinJobAge=600
NodeName={node} NodeAddr=127.0.0.1 CPUs=4 RealMemory=4000 Gres=gpu:2 State=UNKNOWN
PartitionName=debug Nodes={node} Default=YES MaxTime=INFINITE State=UP
"""


class SlurmCluster:
    """A running single-node cluster; its ``env`` points Slurm's commands (and submitit) at it."""

    def __init__(self, base: Path):
        self.base = base
        self.conf = base / "slurm.conf"
        self.env = {**os.environ, "SLURM_CONF": str(self.conf)}

    def run(self, *cmd: str, check: bool = True) -> str:
        out = subprocess.run(cmd, env=self.env, capture_output=True, text=True, timeout=TIMEOUT, check=False)
        if check and out.returncode != 0:
            raise RuntimeError(f"{' '.join(cmd)}: exit {out.returncode}: {out.stderr.strip()}")
        return out.stdout

    def queue(self, job: str) -> list[tuple[str, str]]:
        """(task id, state) of a job's tasks still known to the controller (pending, running, completing)."""
        out = self.run("squeue", "-h", "-r", "-j", job, "-o", "%i %T", check=False)
        return [tuple(line.split()) for line in out.splitlines() if line.strip()]

    def wait_gone(self, job: str, timeout: float) -> None:
        """Block until every task of ``job`` has ended (finished, failed or cancelled; a requeued task has not):
        a one-task job that depends on it (``afterany``) is allocated only then."""
        out = subprocess.run(
            ["srun", f"--dependency=afterany:{job}", "-n1", "--mem=10", "true"],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        assert out.returncode == 0, out.stderr

    def wait_idle(self) -> None:
        """Block until the node takes jobs: srun's first job is allocated only once slurmd has registered."""
        self.run("srun", "-n1", "--mem=10", "true")

    def stop(self) -> None:
        for daemon in ("slurmd", "slurmctld"):
            pidfile = self.base / f"{daemon}.pid"
            try:
                pid = int(pidfile.read_text())
                exited = os.pidfd_open(pid)  # readable once the daemon (not our child) has exited
                os.kill(pid, signal.SIGTERM)
            except (OSError, ValueError):
                continue
            select.select([exited], [], [], TIMEOUT)
            os.close(exited)
        shutil.rmtree(self.base, ignore_errors=True)


def _munge() -> None:
    """munged, as the munge user, with a key (made once): Slurm's authentication between its daemons."""
    key = Path("/etc/munge/munge.key")
    if not key.exists():
        subprocess.run(["mungekey", "--create"], check=True, capture_output=True)
    shutil.chown(key, "munge", "munge")
    key.chmod(0o400)
    run = Path("/run/munge")
    run.mkdir(parents=True, exist_ok=True)
    shutil.chown(run, "munge", "munge")
    if (run / "munge.socket.2").exists() and subprocess.run(["munge", "-n"], capture_output=True).returncode == 0:
        return  # already running
    subprocess.run(["runuser", "-u", "munge", "--", "/usr/sbin/munged"], check=True, capture_output=True)


def start_slurm(base: Path | None = None) -> SlurmCluster:
    """Start a cluster in ``base`` (a new temporary folder by default); the node is idle when this returns."""
    base = Path(base or tempfile.mkdtemp(prefix="stt-slurm-"))
    for sub in ("state", "spool"):
        (base / sub).mkdir(parents=True, exist_ok=True)
    node = socket.gethostname().split(".")[0]
    cluster = SlurmCluster(base)
    cluster.conf.write_text(_conf(base, node, _free_port(), _free_port()))
    # fake GPUs: gres needs character devices; CUDA_VISIBLE_DEVICES is all a job sees of them
    (base / "gres.conf").write_text("AutoDetect=off\nName=gpu File=/dev/null\nName=gpu File=/dev/zero\n")
    _munge()
    try:
        subprocess.run(["slurmctld", "-c", "-f", str(cluster.conf)], check=True, capture_output=True, timeout=TIMEOUT)
        subprocess.run(["slurmd", "-f", str(cluster.conf)], check=True, capture_output=True, timeout=TIMEOUT)
        cluster.wait_idle()
    except BaseException:
        logs = "".join(p.read_text()[-2000:] for p in base.glob("*.log"))
        cluster.stop()
        raise RuntimeError(f"the Slurm cluster did not start:\n{logs}") from None
    return cluster


def _check() -> int:
    t0 = time.time()
    cluster = start_slurm()
    try:
        up = time.time() - t0
        out = cluster.run("srun", "-N1", "-n1", "--gres=gpu:1", "sh", "-c", "echo gpu=$CUDA_VISIBLE_DEVICES")
        print(f"slurm: the node was idle {up:.1f} s after start; a job with a GPU ran: {out.strip()}")
    finally:
        cluster.stop()
    print(f"slurm: setup checked in {time.time() - t0:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(_check())
