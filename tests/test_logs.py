"""thinkjepa.logs in a real process (real descriptors): third-party output of every kind lands
in <workdir>/logs/third_party.log, the project's own lines reach the terminal."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

SCRIPT = r"""
import logging, os, sys, warnings
from thinkjepa import logs
log = logs.capture_third_party(sys.argv[1], verbose=sys.argv[2] == "1")
handler_made_later = logging.StreamHandler(sys.stderr)  # like torch's, created after the capture began
lib = logging.getLogger("somelib"); lib.addHandler(handler_made_later); lib.propagate = False
lib.warning("LIB-HANDLER-LINE")
logging.getLogger("vllm.engine").warning("VLLM-LOGGER-LINE")
os.write(2, b"C-LEVEL-STDERR-LINE\n")
os.write(1, b"C-LEVEL-STDOUT-LINE\n")
warnings.warn_explicit("THIRD-PARTY-WARNING", UserWarning, "/usr/lib/python3/somelib/mod.py", 1)
warnings.warn_explicit("OUR-WARNING", UserWarning, logs.__file__, 1)
logs.project_console().print("OUR-CONSOLE-LINE")
print('{"json": "OUR-STDOUT-LINE"}')
logs.stop_capture()
os.write(2, b"AFTER-STOP-LINE\n")
"""


def _run(tmp_path: Path, verbose: bool) -> tuple[subprocess.CompletedProcess, str]:
    res = subprocess.run([sys.executable, "-c", SCRIPT, str(tmp_path), "1" if verbose else "0"],
                         capture_output=True, text=True, timeout=60, check=True)
    return res, (tmp_path / "logs" / "third_party.log").read_text()


def test_quiet_sends_third_party_output_to_the_log(tmp_path: Path) -> None:
    res, log = _run(tmp_path, verbose=False)
    terminal = res.stdout + res.stderr
    third = ("LIB-HANDLER-LINE", "VLLM-LOGGER-LINE", "C-LEVEL-STDERR-LINE", "C-LEVEL-STDOUT-LINE", "THIRD-PARTY-WARNING")
    for line in third:
        assert line in log and line not in terminal, line
    assert "OUR-CONSOLE-LINE" in res.stderr and "OUR-WARNING" in res.stderr and "OUR-WARNING" not in log
    assert res.stdout.strip() == '{"json": "OUR-STDOUT-LINE"}'  # JSON output stays clean
    assert "AFTER-STOP-LINE" in res.stderr  # descriptors restored


def test_verbose_shows_third_party_logs_live_and_still_writes_the_file(tmp_path: Path) -> None:
    res, log = _run(tmp_path, verbose=True)
    assert "VLLM-LOGGER-LINE" in res.stderr and "VLLM-LOGGER-LINE" in log
    assert "THIRD-PARTY-WARNING" in res.stderr and "C-LEVEL-STDERR-LINE" in res.stderr
