"""`tspin_trl/compat.py`: quirks of the pinned versions handled on import."""

import pytest


def test_deepspeed_cpu_notice_is_dropped_and_other_messages_pass():
    """Importing tspin_trl drops DeepSpeed's 'Setting accelerator to CPU' warning that every CPU run printed."""
    import subprocess
    import sys

    pytest.importorskip("deepspeed")
    code = (
        "import logging, tspin_trl, deepspeed\nlogging.getLogger('DeepSpeed').warning('another DeepSpeed warning')\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert "Setting accelerator to CPU" not in output and "another DeepSpeed warning" in output
