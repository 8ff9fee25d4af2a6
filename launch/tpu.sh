#!/usr/bin/env bash
# Run a simclr_jax job on every worker of a Cloud TPU VM (single host or pod slice) via gcloud.
set -euo pipefail

usage() {
    cat <<'EOF'
Usage: launch/tpu.sh [--dry-run] SUBCOMMAND [OPTIONS] [-- JOB COMMAND...]

Subcommands:
  create   Create the TPU VM (a queued resource unless --no-queued).
  status   Describe the queued resource / TPU VM (wait for state ACTIVE / READY before setup).
  setup    Ship the code to every worker and install it into ~/simclr-venv.
  run      Start JOB COMMAND on every worker in the background (log: ~/simclr-logs/worker-HOST.log).
  stop     Stop the job started by `run` on every worker.
  logs     Print the job log of one worker (--worker N, default 0) or of all (--worker all).
  ssh      Interactive ssh to one worker (--worker N, default 0).
  delete   Delete the queued resource (and its TPU VM) or the TPU VM.

Options (environment variable in brackets):
  --name NAME          TPU / queued resource name            [TPU_NAME]      required
  --zone ZONE          e.g. us-central2-b                    [TPU_ZONE]      required
  --project PROJECT    GCP project                           [TPU_PROJECT]   required
  --type TYPE          accelerator type, e.g. v4-32          [TPU_TYPE]      create only
  --runtime VERSION    TPU software version                  [TPU_RUNTIME]   default by --type:
                         v2/v3/v4-*: tpu-ubuntu2204-base, v5litepod-* (v5e): v2-alpha-tpuv5-lite,
                         v5p-*: v2-alpha-tpuv5, v6e-*: v2-alpha-tpuv6e
  --spot               create: use Spot capacity (cheaper, can be preempted)
  --no-queued          use `tpu-vm create/delete` directly   [TPU_QUEUED=0]
  --repo URL           setup: `git clone URL` on the workers instead of shipping `git archive HEAD`
  --branch REF         setup: branch or tag to clone with --repo
  --python EXE         setup: interpreter for the venv       [TPU_PYTHON]    default python3.11
  --data-dir DIR       run: export TFDS_DATA_DIR=DIR (e.g. gs://BUCKET/tensorflow_datasets)
  --env KEY=VALUE      run: export an extra variable (repeatable)
  --worker N|all       logs/ssh: which worker (default 0)
  --lines N            logs: lines to print (default 100);  --follow: keep following the log
  --dry-run            print each command (`+ ` prefix, shell-quoted) instead of running it [DRY_RUN=1]

Example (v4-32 = 4 workers):
  launch/tpu.sh create --name pod1 --zone us-central2-b --project p --type v4-32 --spot
  launch/tpu.sh setup  --name pod1 --zone us-central2-b --project p
  launch/tpu.sh run    --name pod1 --zone us-central2-b --project p -- \
      python -m simclr_jax.pretrain --config=configs/imagenet.py --workdir=gs://bucket/run1 \
      --config.data_dir=gs://bucket/tfds
  launch/tpu.sh logs   --name pod1 --zone us-central2-b --project p --worker all --follow
  launch/tpu.sh delete --name pod1 --zone us-central2-b --project p

Job arguments are quoted for the remote shell: `~` and `$VAR` in them are NOT expanded on the
workers. Relative paths are relative to the code directory ~/simclr-jax.
EOF
}

# Usage errors: one line naming the problem, exit 2 (as getopt-style tools do).
die() { echo "tpu.sh: error: $*" >&2; exit 2; }
note() { echo "tpu.sh: $*" >&2; }

# Shell-quote words for the remote shell: the job's arguments may contain spaces and quotes.
q() {
    local out
    printf -v out ' %q' "$@"
    printf '%s' "${out# }"
}

# Readable POSIX quoting for display: 'it'\''s' (shlex.split and any sh parse it back).
shq() {
    local w out='' sq="'\\''"
    for w in "$@"; do
        if [[ $w =~ ^[A-Za-z0-9_./:=@%+,-]+$ ]]; then out+=" $w"; else out+=" '${w//\'/$sq}'"; fi
    done
    printf '%s' "${out# }"
}

# Every gcloud/git call goes through here, so --dry-run shows exactly what would run.
run_cmd() {
    if ((DRY_RUN)); then
        echo "+ $(shq "$@")"
    else
        echo "+ $(shq "$@")" >&2
        "$@"
    fi
}

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# Keep in step with requirements.txt (tests/test_launch.py checks it): the [tpu] extra adds libtpu.
JAX_TPU='jax[tpu]==0.10.2'
# Paths on the workers. They stay unquoted in the remote commands so that `~` expands there.
# shellcheck disable=SC2088
RDIR='~/simclr-jax' VENV='~/simclr-venv' LOGDIR='~/simclr-logs'
PIDFILE="$LOGDIR/job.pid"

NAME=${TPU_NAME:-}
ZONE=${TPU_ZONE:-}
PROJECT=${TPU_PROJECT:-}
TYPE=${TPU_TYPE:-}
RUNTIME=${TPU_RUNTIME:-}
# jax 0.10 needs Python >= 3.11; tpu-ubuntu2204-base ships 3.10, so setup installs 3.11 from apt.
PYTHON=${TPU_PYTHON:-python3.11}
[[ ${TPU_QUEUED:-1} == 0 ]] && QUEUED=0 || QUEUED=1
[[ ${DRY_RUN:-0} =~ ^(0|)$ ]] && DRY_RUN=0 || DRY_RUN=1
SPOT=0 FOLLOW=0 WORKER=0 TAIL_LINES=100
REPO='' BRANCH='' DATA_DIR='' SUBCMD=''
EXTRA_ENV=() JOB=()

set_opt() {
    case $1 in
        --name) NAME=$2 ;;
        --zone) ZONE=$2 ;;
        --project) PROJECT=$2 ;;
        --type | --accelerator-type) TYPE=$2 ;;
        --runtime | --runtime-version) RUNTIME=$2 ;;
        --repo) REPO=$2 ;;
        --branch) BRANCH=$2 ;;
        --python) PYTHON=$2 ;;
        --data-dir) DATA_DIR=$2 ;;
        --env) EXTRA_ENV+=("$2") ;;
        --worker) WORKER=$2 ;;
        --lines) TAIL_LINES=$2 ;;
        *) die "unknown option: $1 (see --help)" ;;
    esac
}

while (($#)); do
    case $1 in
        -h | --help) usage; exit 0 ;;
        --dry-run) DRY_RUN=1 ;;
        --spot) SPOT=1 ;;
        --no-queued) QUEUED=0 ;;
        --follow | -f) FOLLOW=1 ;;
        --) shift; JOB=("$@"); break ;;
        --*=*) set_opt "${1%%=*}" "${1#*=}" ;;
        -*) (($# >= 2)) || die "option $1 needs a value"; set_opt "$1" "$2"; shift ;;
        *) [[ -z $SUBCMD ]] || die "unexpected argument: $1 (the job command goes after --)"; SUBCMD=$1 ;;
    esac
    shift
done

require() { [[ -n $1 ]] || die "missing $2 (or set $3)"; } # require VALUE OPTION ENVVAR
require_common() {
    require "$NAME" --name TPU_NAME
    require "$ZONE" --zone TPU_ZONE
    require "$PROJECT" --project TPU_PROJECT
}
check_worker() { [[ $WORKER =~ ^([0-9]+|all)$ ]] || die "--worker must be a number or 'all', got: $WORKER"; }

# Run one shell command line on worker(s) $1.
on_workers() {
    run_cmd gcloud compute tpus tpu-vm ssh "$NAME" --worker="$1" --zone "$ZONE" --project "$PROJECT" \
        --command "$2"
}

# The runtime (VM image) each generation boots with, per https://cloud.google.com/tpu/docs/runtimes;
# a v5e/v5p/v6e slice does not come up on tpu-ubuntu2204-base.
default_runtime() {
    case $1 in
        v2-* | v3-* | v4-*) echo tpu-ubuntu2204-base ;;
        v5litepod-* | v5e-*) echo v2-alpha-tpuv5-lite ;;
        v5p-*) echo v2-alpha-tpuv5 ;;
        v6e-*) echo v2-alpha-tpuv6e ;;
        tpu7x-* | v7x-* | v7-*)
            die "TPU7x (Ironwood) is offered through GKE only, not as the TPU VMs this script creates (https://cloud.google.com/tpu/docs/tpu7x)" ;;
        *) die "no default runtime for --type $1: pass --runtime VERSION (the TPU software version for that generation, see https://cloud.google.com/tpu/docs/runtimes)" ;;
    esac
}

cmd_create() {
    require_common
    require "$TYPE" --type TPU_TYPE
    # Command substitution runs in a subshell: its die would not stop this script.
    if [[ -z $RUNTIME ]]; then RUNTIME=$(default_runtime "$TYPE") || exit 2; fi
    local args
    if ((QUEUED)); then
        # Queued resources wait for capacity instead of failing outright when a zone is full.
        args=(gcloud compute tpus queued-resources create "$NAME" --node-id "$NAME"
            --accelerator-type "$TYPE" --runtime-version "$RUNTIME" --zone "$ZONE" --project "$PROJECT")
    else
        args=(gcloud compute tpus tpu-vm create "$NAME" --accelerator-type "$TYPE"
            --version "$RUNTIME" --zone "$ZONE" --project "$PROJECT")
    fi
    if ((SPOT)); then args+=(--spot); fi
    run_cmd "${args[@]}"
    if ((QUEUED)); then note "queued; run \`launch/tpu.sh status\` until state is ACTIVE, then setup"; fi
}

cmd_status() {
    require_common
    local kind=tpu-vm
    if ((QUEUED)); then kind=queued-resources; fi
    run_cmd gcloud compute tpus "$kind" describe "$NAME" --zone "$ZONE" --project "$PROJECT"
}

cmd_setup() {
    require_common
    local fetch
    if [[ -n $REPO ]]; then
        fetch="rm -rf $RDIR && git clone --depth 1${BRANCH:+ --branch $(q "$BRANCH")} $(q "$REPO") $RDIR"
    else
        # `git archive HEAD` ships exactly the committed tree: no venvs, caches or local data.
        git -C "$ROOT" rev-parse --verify -q HEAD >/dev/null ||
            die "no commit in $ROOT to ship (git archive HEAD); commit first or use --repo URL"
        if [[ -n $(git -C "$ROOT" status --porcelain --untracked-files=no) ]]; then
            note "warning: uncommitted changes are not shipped (only HEAD is)"
        fi
        TMPD=$(mktemp -d)
        trap 'rm -rf "$TMPD"' EXIT
        run_cmd git -C "$ROOT" archive --format=tar.gz -o "$TMPD/simclr-jax.tar.gz" HEAD
        run_cmd gcloud compute tpus tpu-vm scp --recurse --worker=all --zone "$ZONE" --project "$PROJECT" \
            "$TMPD/simclr-jax.tar.gz" "$NAME:simclr-jax.tar.gz"
        fetch="rm -rf $RDIR && mkdir -p $RDIR && tar -xzf ~/simclr-jax.tar.gz -C $RDIR && rm ~/simclr-jax.tar.gz"
    fi
    local py
    py=$(q "$PYTHON")
    # All workers must hold the same code and packages: every host runs the same SPMD program.
    on_workers all "set -e; $fetch && cd $RDIR && \
{ $py -c 'import ensurepip' 2>/dev/null || { sudo apt-get update -q && sudo apt-get install -y -q $py $py-venv; }; } && \
$py -m venv $VENV && $VENV/bin/pip install -q -U pip && \
$VENV/bin/pip install -r requirements.txt $(q "$JAX_TPU") && \
$VENV/bin/pip install --no-deps -e ."
}

cmd_run() {
    require_common
    ((${#JOB[@]})) || die "missing job command after -- (e.g. -- python -m simclr_jax.pretrain ...)"
    # TF only feeds data here (tensorflow-cpu): silence its logs and oneDNN notices.
    # SIMCLR_JAX_REQUIRE_BACKEND: the job stops with one error if JAX fell back to the CPU
    # (--env SIMCLR_JAX_REQUIRE_BACKEND= to run anyway).
    local envs="export TF_CPP_MIN_LOG_LEVEL=3 TF_ENABLE_ONEDNN_OPTS=0 SIMCLR_JAX_REQUIRE_BACKEND=tpu" kv
    if [[ -n $DATA_DIR ]]; then envs+=" TFDS_DATA_DIR=$(q "$DATA_DIR")"; fi
    for kv in "${EXTRA_ENV[@]}"; do
        [[ $kv =~ ^[A-Za-z_][A-Za-z0-9_]*= ]] || die "--env needs KEY=VALUE, got: $kv"
        envs+=" ${kv%%=*}=$(q "${kv#*=}")"
    done
    local log="$LOGDIR/worker-\$(hostname).log"
    # A job still holding the TPU would make the new one fail to open the chips: refuse instead.
    # nohup + all three streams redirected lets the ssh session end while the job keeps running.
    on_workers all "mkdir -p $LOGDIR && cd $RDIR && \
if [ -f $PIDFILE ] && kill -0 \$(cat $PIDFILE) 2>/dev/null; then \
echo \"\$(hostname): job \$(cat $PIDFILE) still running; use stop\" >&2; exit 1; fi && \
$envs && . $VENV/bin/activate && \
{ nohup $(q "${JOB[@]}") > $log 2>&1 < /dev/null & echo \$! > $PIDFILE; } && \
echo \"\$(hostname): started pid \$(cat $PIDFILE), log $log\""
}

cmd_stop() {
    require_common
    on_workers all "if [ -f $PIDFILE ]; then kill \$(cat $PIDFILE) 2>/dev/null || true; rm -f $PIDFILE; fi"
}

cmd_logs() {
    require_common
    check_worker
    local follow=''
    if ((FOLLOW)); then follow=' -F'; fi
    [[ $TAIL_LINES =~ ^[0-9]+$ ]] || die "--lines must be a number, got: $TAIL_LINES"
    # -v prints a header with the file name, which names the worker's host.
    on_workers "$WORKER" "tail -v -n $TAIL_LINES$follow $LOGDIR/worker-\$(hostname).log"
}

cmd_ssh() {
    require_common
    check_worker
    [[ $WORKER != all ]] || die "ssh needs one worker: --worker N"
    run_cmd gcloud compute tpus tpu-vm ssh "$NAME" --worker="$WORKER" --zone "$ZONE" --project "$PROJECT"
}

cmd_delete() {
    require_common
    if ((QUEUED)); then
        # --force also deletes the TPU VM; without it, deleting an ACTIVE queued resource fails.
        run_cmd gcloud compute tpus queued-resources delete "$NAME" --zone "$ZONE" --project "$PROJECT" \
            --force --quiet
    else
        run_cmd gcloud compute tpus tpu-vm delete "$NAME" --zone "$ZONE" --project "$PROJECT" --quiet
    fi
}

case $SUBCMD in
    create | status | setup | run | stop | logs | ssh | delete) "cmd_$SUBCMD" ;;
    '') usage >&2; die "missing subcommand" ;;
    *) die "unknown subcommand: $SUBCMD (see --help)" ;;
esac
