#!/usr/bin/env bash
# Run a simclr_jax job on GPUs: one multi-GPU host directly, or several hosts under SLURM.
set -euo pipefail

usage() {
    cat <<'EOF'
Usage:
  launch/gpu.sh install [--venv DIR] [--cuda 12|13] [--python EXE]
  launch/gpu.sh local [OPTIONS] -- JOB COMMAND...
  launch/gpu.sh slurm --nodes N --gpus-per-node G [OPTIONS] -- JOB COMMAND...

install  Create the virtual environment DIR (default .venv) with JAX's CUDA build
         (jax[cuda12] or jax[cuda13], the version of requirements.txt) and the pinned packages,
         then check that JAX sees the GPUs. Run it on a GPU node (on SLURM: inside `srun`).
         requirements.txt pins the CPU-only jax: without this step JAX runs on the CPU.
local    Run the job in the foreground on this host, one process that sees all its GPUs.
slurm    Write an sbatch script and submit it with `sbatch`. The script starts one process per
         node with `srun`; jax.distributed.initialize() reads the SLURM variables, so the job
         needs no coordinator flags. Each process is given all G GPUs of its node.

The jobs get SIMCLR_JAX_REQUIRE_BACKEND=gpu: a job whose JAX fell back to the CPU (no CUDA
build, no GPU visible) stops with one error line instead of training on the CPU; `local` checks
the same before starting the job.

Options:
  --allow-cpu             run even if JAX's backend is the CPU (no check, no requirement)
  --data-dir DIR          export TFDS_DATA_DIR=DIR
  --env KEY=VALUE         export an extra variable (repeatable)
  --venv DIR              activate DIR/bin/activate first (slurm: otherwise the submitting
                          shell's environment, PATH included, is what the job gets)
  --cuda 12|13            install: CUDA major version of JAX's build (default 12; 13 needs
                          a driver for CUDA 13)
  --python EXE            install: interpreter for the venv (default python3.11)
  --dry-run               print instead of running/submitting [DRY_RUN=1]
 slurm only:
  --nodes N, --gpus-per-node G   required
  --partition P, --time T (e.g. 24:00:00), --account A
  --cpus-per-task C       CPUs for the job's process on each node (its input pipeline decodes
                          the images for all G GPUs); default: the whole node (--exclusive)
  --job-name NAME         default simclr
  --script FILE           where to write the sbatch script
                          (default slurm-logs/NAME-DATE.sbatch; its output: slurm-logs/NAME-JOBID.out)

Examples:
  launch/gpu.sh install --venv ~/simclr-venv --cuda 12
  launch/gpu.sh local --venv ~/simclr-venv --data-dir ~/tensorflow_datasets -- \
      python -m simclr_jax.pretrain --config=configs/imagenet.py --workdir=runs/r1
  launch/gpu.sh slurm --nodes 4 --gpus-per-node 8 --partition gpu --time 48:00:00 \
      --venv ~/simclr-venv -- \
      python -m simclr_jax.pretrain --config=configs/imagenet.py --workdir=/shared/runs/r1
EOF
}

die() { echo "gpu.sh: error: $*" >&2; exit 2; }

# Readable POSIX shell quoting ('it'\''s'); used for the printed commands and inside the script.
shq() {
    local w out='' sq="'\\''"
    for w in "$@"; do
        if [[ $w =~ ^[A-Za-z0-9_./:=@%+,-]+$ ]]; then out+=" $w"; else out+=" '${w//\'/$sq}'"; fi
    done
    printf '%s' "${out# }"
}

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
[[ ${DRY_RUN:-0} =~ ^(0|)$ ]] && DRY_RUN=0 || DRY_RUN=1
NODES='' GPUS='' PARTITION='' TIME='' ACCOUNT='' CPUS='' JOB_NAME=simclr SCRIPT=''
DATA_DIR='' VENV='' SUBCMD='' CUDA=12 PYTHON=python3.11 ALLOW_CPU=0
EXTRA_ENV=() JOB=()

set_opt() {
    case $1 in
        --nodes) NODES=$2 ;;
        --gpus-per-node) GPUS=$2 ;;
        --partition) PARTITION=$2 ;;
        --time) TIME=$2 ;;
        --account) ACCOUNT=$2 ;;
        --cpus-per-task) CPUS=$2 ;;
        --job-name) JOB_NAME=$2 ;;
        --script) SCRIPT=$2 ;;
        --data-dir) DATA_DIR=$2 ;;
        --venv) VENV=$2 ;;
        --env) EXTRA_ENV+=("$2") ;;
        --cuda) CUDA=$2 ;;
        --python) PYTHON=$2 ;;
        *) die "unknown option: $1 (see --help)" ;;
    esac
}

while (($#)); do
    case $1 in
        -h | --help) usage; exit 0 ;;
        --dry-run) DRY_RUN=1 ;;
        --allow-cpu) ALLOW_CPU=1 ;;
        --) shift; JOB=("$@"); break ;;
        --*=*) set_opt "${1%%=*}" "${1#*=}" ;;
        -*) (($# >= 2)) || die "option $1 needs a value"; set_opt "$1" "$2"; shift ;;
        *) [[ -z $SUBCMD ]] || die "unexpected argument: $1 (the job command goes after --)"; SUBCMD=$1 ;;
    esac
    shift
done

positive() { [[ $2 =~ ^[1-9][0-9]*$ ]] || die "missing or invalid $1 (a positive number): '$2'"; }

# The environment every process gets, as `export` lines (also written into the sbatch script).
env_lines() {
    # TF only feeds data (tensorflow-cpu): silence its logs and oneDNN notices.
    echo "export TF_CPP_MIN_LOG_LEVEL=3 TF_ENABLE_ONEDNN_OPTS=0"
    # The job stops with one error line if JAX fell back to the CPU (simclr_jax/core/accelerator.py).
    if ((ALLOW_CPU)); then
        echo "export SIMCLR_JAX_REQUIRE_BACKEND="
    else
        echo "export SIMCLR_JAX_REQUIRE_BACKEND=gpu"
    fi
    if [[ -n $DATA_DIR ]]; then echo "export TFDS_DATA_DIR=$(shq "$DATA_DIR")"; fi
    local kv
    for kv in "${EXTRA_ENV[@]}"; do
        [[ $kv =~ ^[A-Za-z_][A-Za-z0-9_]*= ]] || die "--env needs KEY=VALUE, got: $kv"
        echo "export ${kv%%=*}=$(shq "${kv#*=}")"
    done
    if [[ -n $VENV ]]; then echo ". $(shq "$VENV/bin/activate")"; fi
}

# JAX without its CUDA build, or with no GPU visible, falls back to the CPU with one warning, and
# a job would then train on the CPU for days: refuse before starting it.
check_gpu_backend() { # check_gpu_backend PYTHON
    local backend
    backend=$("$1" -c 'import jax; print(jax.default_backend())' 2>/dev/null | tail -n 1) || true
    [[ $backend == gpu ]] || die "JAX's backend is '${backend:-unknown: $1 cannot import jax}', not gpu: install JAX's CUDA build (launch/gpu.sh install, or pip install \"jax[cuda12]==$(jax_pin)\"), check that nvidia-smi lists the GPUs, or pass --allow-cpu to run on the CPU anyway"
}

jax_pin() { sed -n 's/^jax==\([^ ;#]*\).*/\1/p' "$ROOT/requirements.txt"; }

cmd_local() {
    local setup
    setup=$(env_lines)
    if ((DRY_RUN)); then
        printf '%s\n' "$setup" | sed 's/^/+ /'
        echo "+ $(shq "${JOB[@]}")"
        return
    fi
    eval "$setup"
    if ((!ALLOW_CPU)); then
        local py=python
        if [[ $(basename -- "${JOB[0]}") == python* ]]; then py=${JOB[0]}; fi
        check_gpu_backend "$py"
    fi
    exec "${JOB[@]}"
}

cmd_install() {
    [[ $CUDA =~ ^(12|13)$ ]] || die "--cuda must be 12 or 13, got: $CUDA"
    local venv=${VENV:-.venv} pin
    pin=$(jax_pin)
    [[ -n $pin ]] || die "no jax==VERSION line in $ROOT/requirements.txt"
    # requirements.txt pins the CPU-only jax; the [cudaNN] extra adds the CUDA plugin and the
    # CUDA libraries from pip (no system CUDA toolkit needed, only the NVIDIA driver).
    local steps=(
        "$(shq "$PYTHON" -m venv "$venv")"
        "$(shq "$venv/bin/pip" install -q -U pip)"
        "$(shq "$venv/bin/pip" install -r "$ROOT/requirements.txt" "jax[cuda$CUDA]==$pin")"
        "$(shq "$venv/bin/pip" install --no-deps -e "$ROOT")"
    )
    local step
    for step in "${steps[@]}"; do
        echo "+ $step"
        if ((!DRY_RUN)); then eval "$step" || die "install step failed: $step"; fi
    done
    if ((!DRY_RUN)) && ((!ALLOW_CPU)); then check_gpu_backend "$venv/bin/python"; fi
}

cmd_slurm() {
    positive --nodes "$NODES"
    positive --gpus-per-node "$GPUS"
    if [[ -n $CPUS ]]; then positive --cpus-per-task "$CPUS"; fi
    # sbatch reads #SBATCH lines itself (no shell quoting there), so keep their values to one word.
    local v
    for v in "$JOB_NAME" "$PARTITION" "$TIME" "$ACCOUNT" "$SCRIPT"; do
        [[ $v != *[[:space:]]* ]] || die "no spaces allowed in SLURM option values or --script: '$v'"
    done
    local setup devices
    setup=$(env_lines)
    # jax.distributed.initialize() on SLURM would give each process only GPU $SLURM_LOCALID (it
    # assumes one process per GPU). With one process per node, hand it all G GPUs explicitly.
    devices=$(seq -s, 0 $((GPUS - 1)))
    [[ -n $SCRIPT ]] || SCRIPT="slurm-logs/$JOB_NAME-$(date +%Y%m%d-%H%M%S).sbatch"
    local body
    body=$(
        echo "#!/bin/bash"
        echo "# Written by launch/gpu.sh; submit with: sbatch $(shq "$SCRIPT")"
        echo "#SBATCH --job-name=$JOB_NAME"
        echo "#SBATCH --nodes=$NODES"
        echo "#SBATCH --ntasks-per-node=1"
        echo "#SBATCH --gpus-per-node=$GPUS"
        # Slurm's default is 1 CPU per task: one core would decode the images for all G GPUs.
        if [[ -n $CPUS ]]; then echo "#SBATCH --cpus-per-task=$CPUS"; else echo "#SBATCH --exclusive"; fi
        if [[ -n $PARTITION ]]; then echo "#SBATCH --partition=$PARTITION"; fi
        if [[ -n $TIME ]]; then echo "#SBATCH --time=$TIME"; fi
        if [[ -n $ACCOUNT ]]; then echo "#SBATCH --account=$ACCOUNT"; fi
        echo "#SBATCH --output=$(dirname "$SCRIPT")/%x-%j.out"
        echo "set -euo pipefail"
        echo "cd $(shq "$PWD")"
        echo "$setup"
        echo "export JAX_LOCAL_DEVICE_IDS=$devices"
        echo "# srun (Slurm >= 22.05) no longer inherits --cpus-per-task; tf.data needs the cores."
        if [[ -n $CPUS ]]; then
            echo "export SRUN_CPUS_PER_TASK=\$SLURM_CPUS_PER_TASK"
        else
            echo "export SRUN_CPUS_PER_TASK=\$SLURM_CPUS_ON_NODE  # the whole node (--exclusive)"
        fi
        echo "# One process per node; if one dies, stop all (the others would hang in collectives)."
        echo "srun --nodes=$NODES --ntasks-per-node=1 --kill-on-bad-exit=1 $(shq "${JOB[@]}")"
    )
    if ((DRY_RUN)); then
        printf '%s\n' "$body"
        echo "+ sbatch $(shq "$SCRIPT")"
        return
    fi
    mkdir -p "$(dirname "$SCRIPT")"
    printf '%s\n' "$body" >"$SCRIPT"
    echo "+ sbatch $(shq "$SCRIPT")" >&2
    sbatch "$SCRIPT"
}

case $SUBCMD in
    install)
        ((${#JOB[@]} == 0)) || die "install takes no job command"
        cmd_install
        ;;
    local | slurm)
        ((${#JOB[@]})) || die "missing job command after -- (e.g. -- python -m simclr_jax.pretrain ...)"
        "cmd_$SUBCMD"
        ;;
    '') usage >&2; die "missing subcommand (install, local or slurm)" ;;
    *) die "unknown subcommand: $SUBCMD (see --help)" ;;
esac
