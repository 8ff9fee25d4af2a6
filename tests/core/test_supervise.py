"""How the supervising parent reads a worker's native log (core/supervise.py): the messages
below are JAX 0.10.2's, copied from the native logs of processes it aborted."""

from simclr_jax.core import supervise

# Process 0 (runs the coordination service) after process 1 was killed.
SERVICE_SAW_TASK_1 = """\
E1207 19:23:58.176307    4499 coordination_service.cc:1549] [9458733420550010675] Use error \
polling to propagate the following error to all tasks: UNAVAILABLE: The following tasks are \
unhealthy (stopped sending heartbeats):
1
The tasks have crashed. Check the task logs for an earlier error, or scheduler events (e.g. \
preemption, eviction) to debug further. [type.googleapis.com/tensorflow.CoordinationServiceError='']
E1207 19:23:58.177073    4510 coordination_service_agent.cc:289] Polled an error from \
coordination service (this can be an error from this or another task).
"""
# Process 1 after process 0 (the coordinator) was killed.
COORDINATOR_GONE = """\
E1207 19:26:14.258325    7184 coordination_service_agent.cc:289] Polled an error from \
coordination service (this can be an error from this or another task).
F1207 19:26:14.258390    7184 client.h:80] Terminating process because the JAX distributed \
service detected fatal errors. This most likely indicates that another task died; see the other \
task logs for more details.
Additional GRPC error information from remote target coordination_service while calling \
/xla.coordination.CoordinationService/PollForError:
:UNKNOWN:Error received from peer  {grpc_message:"Socket closed", grpc_status:14}
*** Check failure stack trace: ***
"""


def test_the_lost_process_is_named_from_the_services_report(tmp_path):
    log = tmp_path / "native.log"
    log.write_text("earlier output\n" + SERVICE_SAW_TASK_1)
    assert supervise.lost_processes(log.read_text()) == [1]
    message = supervise.explain(6, str(log), "process 0", 100)
    assert message.startswith("lost worker: process 1 stopped sending heartbeats for 100 s")
    assert "rerun every worker" in message and str(log) in message


def test_a_lost_coordinator_is_process_0(tmp_path):
    log = tmp_path / "native.log"
    log.write_text(COORDINATOR_GONE)
    assert supervise.lost_processes(log.read_text()) == []
    assert supervise.explain(6, str(log), "process 1", 100).startswith(
        "lost worker: process 0 (the coordinator) is gone")


def test_another_native_death_names_the_signal_and_the_log(tmp_path):
    log = tmp_path / "missing.log"
    message = supervise.explain(9, str(log), "process 2", 100)
    assert message.startswith("process 2 ended by signal SIGKILL") and str(log) in message


def test_peer_loss_is_told_apart_from_storage_errors():
    assert supervise.peer_lost(RuntimeError(
        "UNKNOWN: Gloo AllGather failed: [pair.cc:547] Connection closed by peer"))
    assert supervise.peer_lost(RuntimeError(
        "INTERNAL: Barrier failed because: task is set to ERROR: UNAVAILABLE: Task 1 heartbeat "
        "timeout."))
    assert not supervise.peer_lost(OSError("UNAVAILABLE: GCS write failed, retry later"))
