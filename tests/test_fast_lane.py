"""`make test-fast` (pytest --fast): which tests it keeps, and the guard on what it keeps."""

from __future__ import annotations

from pathlib import Path

import pytest

pytestmark = pytest.mark.subprocess  # a pytest of its own, on this conftest

CONFTEST = Path(__file__).with_name("conftest.py")

SAMPLE = '''
import subprocess
import time

import pytest

import conftest


def test_pure():
    assert 1 + 1 == 2


def test_with_the_data_set(data_dir):
    raise AssertionError("never run in the fast lane")


@pytest.fixture
def own_server() -> "RunningServer":
    raise AssertionError("never set up in the fast lane")


def test_with_a_server_of_its_own(own_server):
    pass


@pytest.mark.needs_server
def test_marked():
    raise AssertionError("never run in the fast lane")


@pytest.mark.subprocess
def test_marked_subprocess():
    raise AssertionError("never run in the fast lane")


def test_starts_a_process():
    subprocess.run(["true"], check=True)


def test_too_slow(monkeypatch):
    monkeypatch.setattr(conftest, "FAST_TEST_SECONDS", 0.05)
    time.sleep(0.2)
'''


def test_the_fast_lane_keeps_only_in_process_tests_and_guards_them(pytester: pytest.Pytester) -> None:
    pytester.makeconftest(CONFTEST.read_text())
    pytester.makepyfile(test_sample=SAMPLE)
    pytester.makeini("[pytest]\nmarkers =\n    needs_server: x\n    subprocess: x\n    s3: x\n")
    result = pytester.runpytest_subprocess("--fast", "-p", "no:cacheprovider", "-q")
    # test_too_slow passes, then fails at teardown (an error): the guard checks the time there.
    result.assert_outcomes(passed=2, failed=1, errors=1, deselected=4)
    out = result.stdout.str()
    assert "a fast-lane test started a process" in out
    assert "a fast-lane test took" in out
    # Without --fast nothing is left out (and nothing guarded): the server tests run and fail here.
    everything = pytester.runpytest_subprocess("-p", "no:cacheprovider", "-q", "-k", "starts_a_process or too_slow or marked")
    everything.assert_outcomes(passed=2, failed=2)
