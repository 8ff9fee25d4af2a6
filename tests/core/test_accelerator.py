"""core/accelerator.py: a job the launcher meant for GPUs or TPUs stops with one error line when
JAX's backend is the CPU (this host's JAX is the CPU build), before it touches its workdir."""

import jax
import pytest


@pytest.mark.parametrize("required, fix", [
    ("gpu", f"pip install \"jax[cuda12]=={jax.__version__}\""),
    ("tpu", f"pip install \"jax[tpu]=={jax.__version__}\""),
])
def test_a_job_required_on_an_accelerator_refuses_the_cpu(tmp_path, run_job, error_lines,
                                                           required, fix):
    workdir = tmp_path / "run"
    result = run_job("pretrain", f"--workdir={workdir}",
                     env={"SIMCLR_JAX_REQUIRE_BACKEND": required})
    assert result.returncode == 2, result.stderr[-3000:]
    assert "Traceback" not in result.stderr
    (error,) = error_lines(result)
    assert f"SIMCLR_JAX_REQUIRE_BACKEND={required} (set by the launcher) but JAX's backend is " \
           f"cpu" in error, error
    assert fix in error and "SIMCLR_JAX_REQUIRE_BACKEND= (empty)" in error, error
    assert not workdir.exists()


def test_an_unknown_backend_name_is_one_error_line(tmp_path, run_job, error_lines):
    result = run_job("pretrain", f"--workdir={tmp_path}",
                     env={"SIMCLR_JAX_REQUIRE_BACKEND": "cuda"})
    assert result.returncode == 2
    (error,) = error_lines(result)
    assert "SIMCLR_JAX_REQUIRE_BACKEND=cuda is not a backend: use one of gpu, tpu, cpu" in error
