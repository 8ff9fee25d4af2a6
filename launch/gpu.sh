#!/usr/bin/env bash
# Run a simclr_jax job on GPUs: one multi-GPU host directly, or several hosts under SLURM.
set -euo pipefail

usage() {
    cat <<'EOF'
Usage:
  launch/gpu.sh local [OPTIONS] -- JOB COMMAND...
  launch/gpu.sh slurm --nodes N --gpus-per-node G [OPTIONS] -- JOB COMMAND...

local    Run the job in the foreground on this host, one process that sees all its GPUs.
slurm    Write an sbatch script and submit it with `sbatch`. The script starts one process per
         node with `srun`; jax.distributed.initialize() reads the SLURM variables, so the job
         needs no coordinator flags. Each process is given all G GPUs of its node.

Options:
  --data-dir DIR          export TFDS_DATA_DIR=DIR
  --env KEY=VALUE         export an extra variable (repeatable)
  --venv DIR              activate DIR/bin/activate first (slurm: otherwise the submitting
                          shell's environment, PATH included, is what the job gets)
  --dry-run               print instead of running/submitting [DRY_RUN=1]
 slurm only:
  --nodes N, --gpus-per-node G   required
  --partition P, --time T (e.g. 24:00:00), --account A, --cpus-per-task C
  --job-name NAME         default simclr
  --script FILE           where to write the sbatch script
                          (default slurm-logs/NAME-DATE.sbatch; its output: slurm-logs/NAME-JOBID.out)

Examples:
  launch/gpu.sh local --data-dir ~/tensorflow_datasets -- \
      python -m simclr_jax.pretrain --config=configs/imagenet.py --workdir=runs/r1
  launch/gpu.sh slurm --nodes 4 --gpus-per-node 8 --partition gpu --time 48:00:00 -- \
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

[[ ${DRY_RUN:-0} =~ ^(0|)$ ]] && DRY_RUN=0 || DRY_RUN=1
NODES='' GPUS='' PARTITION='' TIME='' ACCOUNT='' CPUS='' JOB_NAME=simclr SCRIPT=''
DATA_DIR='' VENV='' SUBCMD=''
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
        *) die "unknown option: $1 (see --help)" ;;
    esac
}

while (($#)); do
    case $1 in
        -h | --help) usage; exit 0 ;;
        --dry-run) DRY_RUN=1 ;;
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
    if [[ -n $DATA_DIR ]]; then echo "export TFDS_DATA_DIR=$(shq "$DATA_DIR")"; fi
    local kv
    for kv in "${EXTRA_ENV[@]}"; do
        [[ $kv =~ ^[A-Za-z_][A-Za-z0-9_]*= ]] || die "--env needs KEY=VALUE, got: $kv"
        echo "export ${kv%%=*}=$(shq "${kv#*=}")"
    done
    if [[ -n $VENV ]]; then echo ". $(shq "$VENV/bin/activate")"; fi
}

cmd_local() {
    local setup
    setup=$(env_lines)
    if ((DRY_RUN)); then
        printf '%s\n' "$setup" | sed 's/^/+ /'
        echo "+ $(shq "${JOB[@]}")"
        return
    fi
    eval "$setup"
    exec "${JOB[@]}"
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
        if [[ -n $CPUS ]]; then echo "#SBATCH --cpus-per-task=$CPUS"; fi
        if [[ -n $PARTITION ]]; then echo "#SBATCH --partition=$PARTITION"; fi
        if [[ -n $TIME ]]; then echo "#SBATCH --time=$TIME"; fi
        if [[ -n $ACCOUNT ]]; then echo "#SBATCH --account=$ACCOUNT"; fi
        echo "#SBATCH --output=$(dirname "$SCRIPT")/%x-%j.out"
        echo "set -euo pipefail"
        echo "cd $(shq "$PWD")"
        echo "$setup"
        echo "export JAX_LOCAL_DEVICE_IDS=$devices"
        if [[ -n $CPUS ]]; then
            echo "# srun (Slurm >= 22.05) no longer inherits --cpus-per-task; tf.data needs the cores."
            echo "export SRUN_CPUS_PER_TASK=\$SLURM_CPUS_PER_TASK"
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
    local | slurm)
        ((${#JOB[@]})) || die "missing job command after -- (e.g. -- python -m simclr_jax.pretrain ...)"
        "cmd_$SUBCMD"
        ;;
    '') usage >&2; die "missing subcommand (local or slurm)" ;;
    *) die "unknown subcommand: $SUBCMD (see --help)" ;;
esac
