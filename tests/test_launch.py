"""Tests for launch/tpu.sh and launch/gpu.sh.

Stand-in `gcloud`, `sbatch` and `srun` executables record how they were called; no cloud, no
cluster, no JAX. The recorded remote `--command` of `tpu.sh run` and the generated sbatch script
are also executed locally, to check that the job's arguments survive the quoting unchanged.
"""

import json
import os
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
TPU_SH = ROOT / "launch" / "tpu.sh"
GPU_SH = ROOT / "launch" / "gpu.sh"

COMMON = ["--name", "pod1", "--zone", "us-central2-b", "--project", "my-proj"]
REPO_URL = "https://github.com/example/simclr_jax.git"
DATA_DIR = "gs://bucket/tensorflow_datasets"
# Spaces, both quote kinds, and shell syntax that must reach the job literally, never run.
JOB = [
    "python", "-m", "simclr_jax.pretrain", "--config=configs/imagenet.py",
    "--workdir=gs://bucket/run 1", "--config.note=it's a \"quoted\" run",
    "--config.tag=$(touch pwned); echo $HOME", "--config.data_dir=gs://bucket/tfds",
]

# Appends one line per call: the program name and its argv, tab-joined.
RECORDER = """#!/usr/bin/env bash
(IFS=$'\\t'; printf '%s\\n' "NAME"$'\\t'"$*") >> "$FAKE_LOG"
"""
# gcloud also lists the tarball it is asked to copy (tpu.sh deletes it afterwards).
GCLOUD_EXTRA = """if [[ $4 == scp ]]; then
    for a in "$@"; do if [[ -f $a ]]; then tar -tzf "$a" >> "$FAKE_LOG.tarlist"; fi; done
fi
"""
SBATCH_EXTRA = 'cp "$1" "$FAKE_LOG.sbatch"\necho "Submitted batch job 42"\n'
# Stand-in for the job's `python` (TPU) and for `srun` (SLURM): dumps argv, cwd and env as JSON.
DUMP = f"""#!{sys.executable}
import json, os, sys, time
keys = ["TF_CPP_MIN_LOG_LEVEL", "TF_ENABLE_ONEDNN_OPTS", "TFDS_DATA_DIR", "JAX_LOCAL_DEVICE_IDS",
        "SRUN_CPUS_PER_TASK", "SIMCLR_JAX_REQUIRE_BACKEND", "EXTRA"]
out = os.environ["FAKE_DUMP"]
with open(out + ".tmp", "w") as f:
    env = {{k: os.environ.get(k) for k in keys}}
    json.dump({{"argv": sys.argv[1:], "cwd": os.getcwd(), "env": env}}, f)
os.rename(out + ".tmp", out)
time.sleep(float(os.environ.get("FAKE_JOB_SLEEP", "0")))
"""


def write_exe(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    path.chmod(0o755)


@pytest.fixture
def env(tmp_path):
    """Environment with stand-ins first on PATH and no TPU_* / DRY_RUN settings leaking in."""
    bin_dir = tmp_path / "bin"
    write_exe(bin_dir / "gcloud", RECORDER.replace("NAME", "gcloud") + GCLOUD_EXTRA)
    write_exe(bin_dir / "sbatch", RECORDER.replace("NAME", "sbatch") + SBATCH_EXTRA)
    write_exe(bin_dir / "srun", DUMP)
    leaky = ("TPU_", "DRY_RUN", "TF_", "TFDS_")
    e = {k: v for k, v in os.environ.items() if not k.startswith(leaky)}
    e.update(PATH=f"{bin_dir}{os.pathsep}{e['PATH']}", FAKE_LOG=str(tmp_path / "calls.log"))
    return e


def calls(env) -> list[list[str]]:
    log = Path(env["FAKE_LOG"])
    return [line.split("\t") for line in log.read_text().splitlines()] if log.exists() else []


def sh(script, args, env, cwd=ROOT, check=True):
    p = subprocess.run(["bash", str(script), *args], env=env, cwd=cwd, capture_output=True,
                       text=True, timeout=60)
    if check:
        assert p.returncode == 0, p.stderr
    return p


def opt(argv, name):
    """Value of `name VALUE` in argv."""
    assert name in argv, (name, argv)
    return argv[argv.index(name) + 1]


def jax_pin() -> str:
    reqs = (ROOT / "requirements.txt").read_text().splitlines()
    return next(line.split("==")[1].strip() for line in reqs if line.startswith("jax=="))


SEQUENCE = [
    ["create", *COMMON, "--type", "v4-32", "--spot"],
    ["setup", *COMMON, "--repo", REPO_URL],
    ["run", *COMMON, "--data-dir", DATA_DIR, "--", *JOB],
    ["logs", *COMMON, "--worker", "2"],
    ["delete", *COMMON],
]


def test_tpu_pod_sequence(env):
    for args in SEQUENCE:
        sh(TPU_SH, args, env)
    got = calls(env)
    assert [c[:6] for c in got] == [
        ["gcloud", "compute", "tpus", "queued-resources", "create", "pod1"],
        ["gcloud", "compute", "tpus", "tpu-vm", "ssh", "pod1"],
        ["gcloud", "compute", "tpus", "tpu-vm", "ssh", "pod1"],
        ["gcloud", "compute", "tpus", "tpu-vm", "ssh", "pod1"],
        ["gcloud", "compute", "tpus", "queued-resources", "delete", "pod1"],
    ]
    for c in got:
        assert opt(c, "--zone") == "us-central2-b" and opt(c, "--project") == "my-proj"

    create, setup, run, logs, delete = got
    assert opt(create, "--accelerator-type") == "v4-32"
    assert opt(create, "--node-id") == "pod1"
    assert opt(create, "--runtime-version") == "tpu-ubuntu2204-base"
    assert "--spot" in create

    assert "--worker=all" in setup
    install = opt(setup, "--command")
    assert f"git clone --depth 1 {REPO_URL} ~/simclr-jax" in install
    assert "-m venv ~/simclr-venv" in install
    assert f"pip install -r requirements.txt jax\\[tpu\\]=={jax_pin()}" in install
    assert "pip install --no-deps -e ." in install

    assert "--worker=all" in run
    job = opt(run, "--command")
    assert "export TF_CPP_MIN_LOG_LEVEL=3 TF_ENABLE_ONEDNN_OPTS=0" in job
    assert "SIMCLR_JAX_REQUIRE_BACKEND=tpu" in job  # a CPU fallback stops the job
    assert f"TFDS_DATA_DIR={DATA_DIR}" in job
    assert "nohup python -m simclr_jax.pretrain --config=configs/imagenet.py" in job
    assert "> ~/simclr-logs/worker-$(hostname).log 2>&1" in job

    assert "--worker=2" in logs
    assert "~/simclr-logs/worker-$(hostname).log" in opt(logs, "--command")
    assert "--quiet" in delete and "--force" in delete


@pytest.mark.parametrize("how", ["flag", "env"])
def test_dry_run_prints_the_same_commands_without_calling_gcloud(env, how):
    for args in SEQUENCE:
        sh(TPU_SH, args, env)
    real = calls(env)
    Path(env["FAKE_LOG"]).unlink()

    printed = []
    dry_env = dict(env, DRY_RUN="1") if how == "env" else env
    for args in SEQUENCE:
        p = sh(TPU_SH, ["--dry-run", *args] if how == "flag" else args, dry_env)
        lines = p.stdout.splitlines()
        assert lines and all(line.startswith("+ gcloud ") for line in lines), p.stdout
        printed += [shlex.split(line[2:]) for line in lines]
    assert calls(env) == []  # gcloud never ran
    assert printed == real  # ... and what is printed is exactly what runs


def test_tpu_env_vars_supply_options(env):
    env.update(TPU_NAME="pod2", TPU_ZONE="europe-west4-a", TPU_PROJECT="p2", TPU_TYPE="v5p-64",
               TPU_RUNTIME="v2-alpha-tpuv5")
    sh(TPU_SH, ["create", "--no-queued"], env)
    sh(TPU_SH, ["delete", "--no-queued"], env)
    create, delete = calls(env)
    assert create[:6] == ["gcloud", "compute", "tpus", "tpu-vm", "create", "pod2"]
    assert opt(create, "--accelerator-type") == "v5p-64"
    assert opt(create, "--version") == "v2-alpha-tpuv5"
    assert opt(create, "--zone") == "europe-west4-a" and "--spot" not in create
    assert delete[:6] == ["gcloud", "compute", "tpus", "tpu-vm", "delete", "pod2"]
    assert "--quiet" in delete


@pytest.mark.parametrize("drop, option", [("--zone", "--zone"), ("--name", "--name"),
                                          ("--project", "--project"), (None, "--type")])
def test_missing_option_is_one_line_and_exit_2(env, drop, option):
    args = list(COMMON)
    if drop:
        del args[args.index(drop):args.index(drop) + 2]
    p = sh(TPU_SH, ["create", *args], env, check=False)
    assert p.returncode == 2
    assert len(p.stderr.strip().splitlines()) == 1 and option in p.stderr, p.stderr
    assert calls(env) == []


# The TPU software version each generation boots with (https://cloud.google.com/tpu/docs/runtimes).
RUNTIMES = [("v2-8", "tpu-ubuntu2204-base"), ("v3-32", "tpu-ubuntu2204-base"),
            ("v4-32", "tpu-ubuntu2204-base"), ("v5litepod-16", "v2-alpha-tpuv5-lite"),
            ("v5p-64", "v2-alpha-tpuv5"), ("v6e-8", "v2-alpha-tpuv6e")]


@pytest.mark.parametrize("queued", [True, False])
@pytest.mark.parametrize("tpu_type, runtime", RUNTIMES)
def test_create_boots_the_runtime_of_the_tpu_generation(env, tpu_type, runtime, queued):
    flags = [] if queued else ["--no-queued"]
    p = sh(TPU_SH, ["--dry-run", "create", *COMMON, "--type", tpu_type, *flags], env)
    (line,) = p.stdout.splitlines()
    create = shlex.split(line[2:])
    assert opt(create, "--accelerator-type") == tpu_type
    assert opt(create, "--runtime-version" if queued else "--version") == runtime


def test_create_keeps_an_explicit_runtime(env):
    p = sh(TPU_SH, ["--dry-run", "create", *COMMON, "--type", "v5p-8", "--runtime", "custom"], env)
    assert opt(shlex.split(p.stdout.splitlines()[0][2:]), "--runtime-version") == "custom"


@pytest.mark.parametrize("tpu_type, hint", [("v9x-16", "pass --runtime VERSION"),
                                            ("tpu7x-8", "GKE only")])
def test_create_without_a_known_runtime_is_one_error_line(env, tpu_type, hint):
    p = sh(TPU_SH, ["create", *COMMON, "--type", tpu_type], env, check=False)
    assert p.returncode == 2, p.stderr
    assert len(p.stderr.strip().splitlines()) == 1 and hint in p.stderr, p.stderr
    assert calls(env) == []


def test_bad_usage_exits_2(env):
    assert sh(TPU_SH, ["run", *COMMON], env, check=False).returncode == 2  # no job after --
    assert sh(TPU_SH, ["launch", *COMMON], env, check=False).returncode == 2
    assert sh(TPU_SH, ["logs", *COMMON, "--worker", "x"], env, check=False).returncode == 2
    assert "Usage:" in sh(TPU_SH, ["--help"], env).stdout
    assert calls(env) == []


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return False
    return state not in ("Z", "X")


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs /proc")
def test_run_command_executes_the_job_verbatim_on_a_worker(env, tmp_path):
    """Run the recorded remote command in a local bash, as a worker's login shell would."""
    sh(TPU_SH, ["run", *COMMON, "--data-dir", DATA_DIR, "--env", "EXTRA=a b", "--", *JOB], env)
    sh(TPU_SH, ["stop", *COMMON], env)
    run, stop = calls(env)
    home = tmp_path / "home"
    code = home / "simclr-jax"
    code.mkdir(parents=True)
    write_exe(home / "simclr-venv" / "bin" / "python", DUMP)
    activate = home / "simclr-venv" / "bin" / "activate"
    activate.write_text('export PATH="$HOME/simclr-venv/bin:$PATH"\n')
    dump = tmp_path / "job.json"
    worker = {k: v for k, v in env.items() if k != "FAKE_LOG"}
    worker.update(HOME=str(home), FAKE_DUMP=str(dump), FAKE_JOB_SLEEP="60")

    def remote(command):
        return subprocess.run(["bash", "-c", command], env=worker, cwd=home, capture_output=True,
                              text=True, timeout=30)

    p = remote(opt(run, "--command"))
    assert p.returncode == 0, p.stderr
    pid = int((home / "simclr-logs" / "job.pid").read_text())
    try:
        for _ in range(100):
            if dump.exists():
                break
            time.sleep(0.1)
        got = json.loads(dump.read_text())
        assert got["argv"] == JOB[1:]
        assert got["cwd"] == str(code)
        assert got["env"]["TF_CPP_MIN_LOG_LEVEL"] == "3"
        assert got["env"]["TF_ENABLE_ONEDNN_OPTS"] == "0"
        assert got["env"]["TFDS_DATA_DIR"] == DATA_DIR and got["env"]["EXTRA"] == "a b"
        assert (home / "simclr-logs" / f"worker-{os.uname().nodename}.log").exists()
        assert not (code / "pwned").exists() and not (home / "pwned").exists()
        # A second run while the job still holds the TPU is refused.
        again = remote(opt(run, "--command"))
        assert again.returncode == 1 and "still running" in again.stderr
        assert remote(opt(stop, "--command")).returncode == 0
        for _ in range(100):
            if not alive(pid):
                break
            time.sleep(0.1)
        assert not alive(pid) and not (home / "simclr-logs" / "job.pid").exists()
    finally:
        if alive(pid):
            os.kill(pid, 15)


def test_setup_ships_git_archive_of_head(env, tmp_path):
    repo = tmp_path / "repo"
    (repo / "launch").mkdir(parents=True)
    shutil.copy(TPU_SH, repo / "launch" / "tpu.sh")
    (repo / "simclr_jax").mkdir()
    (repo / "simclr_jax" / "__init__.py").write_text("")
    (repo / "requirements.txt").write_text("jax==0.10.2\n")
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@t", "-c", "commit.gpgsign=false"]
    subprocess.run([*git, "init", "-q"], cwd=repo, check=True)
    subprocess.run([*git, "add", "."], cwd=repo, check=True)
    subprocess.run([*git, "commit", "-qm", "x"], cwd=repo, check=True)
    (repo / "not_committed.txt").write_text("local only")

    sh(repo / "launch" / "tpu.sh", ["setup", *COMMON], env, cwd=tmp_path)
    scp, ssh = calls(env)
    assert scp[:5] == ["gcloud", "compute", "tpus", "tpu-vm", "scp"]
    assert "--recurse" in scp and "--worker=all" in scp
    assert scp[-2].endswith("simclr-jax.tar.gz") and scp[-1] == "pod1:simclr-jax.tar.gz"
    assert not Path(scp[-2]).exists()  # temporary tarball cleaned up
    shipped = set(Path(env["FAKE_LOG"] + ".tarlist").read_text().split())
    assert {"launch/tpu.sh", "simclr_jax/__init__.py", "requirements.txt"} <= shipped
    assert "not_committed.txt" not in shipped
    assert ssh[:6] == ["gcloud", "compute", "tpus", "tpu-vm", "ssh", "pod1"]
    assert "--worker=all" in ssh
    command = opt(ssh, "--command")
    assert "tar -xzf ~/simclr-jax.tar.gz -C ~/simclr-jax" in command
    assert "pip install --no-deps -e ." in command


SLURM = ["slurm", "--nodes", "2", "--gpus-per-node", "8", "--partition", "gpu",
         "--time", "24:00:00", "--cpus-per-task", "32", "--data-dir", "/data/tfds",
         "--script", "out/job.sbatch"]


def test_gpu_slurm_dry_run_prints_script(env, tmp_path):
    p = sh(GPU_SH, [*SLURM, "--dry-run", "--", *JOB], env, cwd=tmp_path)
    lines = p.stdout.splitlines()
    assert lines[0] == "#!/bin/bash"
    for directive in ["--nodes=2", "--ntasks-per-node=1", "--gpus-per-node=8", "--partition=gpu",
                      "--time=24:00:00", "--cpus-per-task=32", "--output=out/%x-%j.out"]:
        assert f"#SBATCH {directive}" in lines
    assert "export TFDS_DATA_DIR=/data/tfds" in lines
    assert any(line.startswith("srun --nodes=2 --ntasks-per-node=1 ") for line in lines)
    assert lines[-1] == "+ sbatch out/job.sbatch"
    assert calls(env) == [] and not (tmp_path / "out").exists()


def test_gpu_slurm_submits_a_script_that_runs_the_job(env, tmp_path):
    p = sh(GPU_SH, [*SLURM, "--", *JOB], env, cwd=tmp_path)
    assert "Submitted batch job 42" in p.stdout
    assert calls(env) == [["sbatch", "out/job.sbatch"]]
    script = tmp_path / "out" / "job.sbatch"
    assert script.read_text() == Path(env["FAKE_LOG"] + ".sbatch").read_text()

    # Execute the script as SLURM would on the batch node, with the stand-in srun.
    dump = tmp_path / "srun.json"
    run_env = dict(env, FAKE_DUMP=str(dump), SLURM_CPUS_PER_TASK="32")
    r = subprocess.run(["bash", str(script)], env=run_env, cwd="/", capture_output=True, text=True,
                       timeout=30)
    assert r.returncode == 0, r.stderr
    got = json.loads(dump.read_text())
    assert got["argv"] == ["--nodes=2", "--ntasks-per-node=1", "--kill-on-bad-exit=1", *JOB]
    assert got["cwd"] == str(tmp_path)
    assert got["env"]["TF_CPP_MIN_LOG_LEVEL"] == "3" and got["env"]["TFDS_DATA_DIR"] == "/data/tfds"
    assert got["env"]["JAX_LOCAL_DEVICE_IDS"] == "0,1,2,3,4,5,6,7"  # one process sees all 8 GPUs
    assert got["env"]["SRUN_CPUS_PER_TASK"] == "32"
    assert got["env"]["SIMCLR_JAX_REQUIRE_BACKEND"] == "gpu"  # a CPU fallback stops the job


def test_gpu_slurm_gives_the_job_the_whole_node_by_default(env, tmp_path):
    """Without --cpus-per-task the job takes the node (Slurm's default, 1 CPU, would decode the
    images for all GPUs on one core) and srun hands its process every CPU of the node."""
    slurm = [a for a in SLURM if a not in ("--cpus-per-task", "32")]
    sh(GPU_SH, [*slurm, "--", *JOB], env, cwd=tmp_path)
    script = tmp_path / "out" / "job.sbatch"
    lines = script.read_text().splitlines()
    assert "#SBATCH --exclusive" in lines
    assert not any(line.startswith("#SBATCH --cpus-per-task") for line in lines)
    dump = tmp_path / "srun.json"
    run_env = dict(env, FAKE_DUMP=str(dump), SLURM_CPUS_ON_NODE="96")
    r = subprocess.run(["bash", str(script)], env=run_env, cwd="/", capture_output=True, text=True,
                       timeout=30)
    assert r.returncode == 0, r.stderr
    assert json.loads(dump.read_text())["env"]["SRUN_CPUS_PER_TASK"] == "96"


def test_gpu_slurm_missing_nodes_exits_2(env, tmp_path):
    p = sh(GPU_SH, ["slurm", "--gpus-per-node", "8", "--", *JOB], env, cwd=tmp_path, check=False)
    assert p.returncode == 2 and "--nodes" in p.stderr and len(p.stderr.strip().splitlines()) == 1
    assert calls(env) == []


def test_gpu_local_runs_job_with_env(env, tmp_path):
    dump = tmp_path / "local.json"
    write_exe(tmp_path / "job", DUMP)
    sh(GPU_SH, ["local", "--allow-cpu", "--data-dir", "/data/tfds", "--", str(tmp_path / "job"),
                *JOB[1:]], dict(env, FAKE_DUMP=str(dump)), cwd=tmp_path)
    got = json.loads(dump.read_text())
    assert got["argv"] == JOB[1:]
    assert got["env"]["TF_CPP_MIN_LOG_LEVEL"] == "3" and got["env"]["TFDS_DATA_DIR"] == "/data/tfds"
    assert got["env"]["SIMCLR_JAX_REQUIRE_BACKEND"] == ""  # --allow-cpu: no requirement


def test_gpu_local_refuses_to_start_a_job_on_a_cpu_only_jax(env, tmp_path):
    """This host's JAX is the CPU build (requirements.txt's): the job's own interpreter reports
    backend 'cpu', so gpu.sh stops with one error line naming the fix and never starts it."""
    marker = tmp_path / "started"
    job = [sys.executable, "-c", f"open({str(marker)!r}, 'w')"]
    p = sh(GPU_SH, ["local", "--", *job], env, cwd=tmp_path, check=False)
    assert p.returncode == 2, p.stderr
    (line,) = p.stderr.strip().splitlines()
    assert line.startswith("gpu.sh: error: JAX's backend is 'cpu', not gpu"), line
    assert f'jax[cuda12]=={jax_pin()}' in line and "--allow-cpu" in line, line
    assert not marker.exists()
    sh(GPU_SH, ["local", "--allow-cpu", "--", *job], env, cwd=tmp_path)
    assert marker.exists()


@pytest.mark.parametrize("cuda", ["12", "13"])
def test_gpu_install_dry_run_installs_jax_cuda_build(env, tmp_path, cuda):
    venv = tmp_path / "venv"
    p = sh(GPU_SH, ["install", "--dry-run", "--venv", str(venv), "--cuda", cuda], env)
    steps = [shlex.split(line[2:]) for line in p.stdout.splitlines()]
    assert steps == [
        ["python3.11", "-m", "venv", str(venv)],
        [f"{venv}/bin/pip", "install", "-q", "-U", "pip"],
        [f"{venv}/bin/pip", "install", "-r", str(ROOT / "requirements.txt"),
         f"jax[cuda{cuda}]=={jax_pin()}"],
        [f"{venv}/bin/pip", "install", "--no-deps", "-e", str(ROOT)],
    ]
    assert not venv.exists()


def test_gpu_install_bad_cuda_exits_2(env):
    p = sh(GPU_SH, ["install", "--cuda", "11"], env, check=False)
    assert p.returncode == 2 and "--cuda must be 12 or 13" in p.stderr


def test_gpu_local_dry_run(env):
    p = sh(GPU_SH, ["local", "--dry-run", "--data-dir", "/data/tfds", "--", *JOB], env)
    lines = p.stdout.splitlines()
    assert "+ export TF_CPP_MIN_LOG_LEVEL=3 TF_ENABLE_ONEDNN_OPTS=0" in lines
    assert "+ export TFDS_DATA_DIR=/data/tfds" in lines
    assert shlex.split(lines[-1][2:]) == JOB
