"""`tspin_trl/scripts/launch.py`: the warnings for a launch that asked for several processes and got one, or started
processes that each train alone (a real launch: `tests/launches/test_cli.py`)."""

from tspin_trl.scripts.launch import lone_process_warning, single_process_launch_warning


def test_a_launch_that_asked_for_two_processes_and_got_one_is_named_by_its_environment():
    # what accelerate 1.15's launchers set in the child (`env` printed from inside each launch)
    simple = {"ACCELERATE_USE_CPU": "True", "ACCELERATE_DYNAMO_BACKEND": "NO", "OMP_NUM_THREADS": "1"}
    assert single_process_launch_warning(simple) is None  # --num_processes 1: fine
    assert "--multi_gpu" in single_process_launch_warning(
        simple | {"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": "29500"}
    )
    multi = {"ACCELERATE_DYNAMO_BACKEND": "NO", "MASTER_ADDR": "localhost", "RANK": "0", "WORLD_SIZE": "2"}
    assert single_process_launch_warning(multi) is None and single_process_launch_warning({}) is None
    # `--multi_gpu --num_processes 2` on CPU without `--use_cpu true`: two processes that each train alone
    assert "--use_cpu true" in lone_process_warning(1, multi)
    assert lone_process_warning(2, multi) is None and lone_process_warning(1, simple) is None
