"""pytest fixtures that run a real xapid (see xapilib.Xapid).

- xapid:          one server per test module (scope="module")
- xapid_fn:       a fresh server per test (for tests that kill or restart it)
- xapid_factory:  start(extra_args=..., https=..., accounts=...) as many
                  servers as a test needs; all are stopped afterwards
- session / api:  a root session on the module's server
- guests:         the directory of the tiny QEMU test guests, built once
                  per run (scope="session"); linux_guest adds the Linux
                  guest there, built once when first asked for, and skips
                  the tests that ask where it cannot be built

Every server is stopped with SIGTERM at teardown and must exit cleanly
within 10 s; a server that has to be killed fails the test.

When xapid is not built, or every test of a run skipped, pytest exits
with 77, which ctest reports as "skipped" (SKIP_RETURN_CODE).
"""

import os
import shutil
import sys
import tempfile

import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import guestlib  # noqa: E402
import poollib  # noqa: E402
import xapilib  # noqa: E402

SKIPPED_EXIT = 77


def _require_bin():
    if not xapilib.xapid_bin():
        pytest.exit("xapid is not built: set XAPID_BIN (tried %s)"
                    % os.path.join(xapilib.BUILD_DIR, "bin", "xapid"),
                    returncode=SKIPPED_EXIT)


class _Servers:
    """Starts servers and stops them all (cleanly) at the end."""

    def __init__(self):
        self.servers = []

    def start(self, extra_args=(), https=False, accounts=None,
              workdir=None, password=None):
        _require_bin()
        x = xapilib.Xapid(workdir=workdir, extra_args=extra_args,
                          https=https, accounts=accounts, password=password)
        self.servers.append(x)
        x.start()
        return x

    def close(self):
        problems = []
        for x in self.servers:
            if x.proc is not None:
                alive_before = x.alive()
                rc = x.stop()
                if not alive_before:
                    problems.append("xapid died during the test (rc=%r):\n%s"
                                    % (rc, x.stderr_text()))
                elif rc != 0:
                    problems.append("xapid did not exit cleanly on SIGTERM "
                                    "within %.0f s (rc=%r):\n%s"
                                    % (xapilib.STOP_TIMEOUT, rc,
                                       x.stderr_text()))
            x.cleanup()
        self.servers = []
        if problems:
            pytest.fail("\n".join(problems), pytrace=False)


@pytest.fixture(scope="module")
def xapid():
    s = _Servers()
    x = s.start()
    yield x
    s.close()


@pytest.fixture(scope="module")
def xapid_https():
    s = _Servers()
    x = s.start(https=True)
    yield x
    s.close()


@pytest.fixture
def xapid_fn():
    s = _Servers()
    x = s.start()
    yield x
    s.close()


@pytest.fixture
def xapid_factory():
    s = _Servers()
    yield s
    s.close()


@pytest.fixture(scope="module")
def xapid_module_factory():
    s = _Servers()
    yield s
    s.close()


@pytest.fixture(scope="module")
def session(xapid):
    """A root session on the module's server (XML-RPC)."""
    return xapid.login()


# ---- exit code 77 when nothing ran ---------------------------------------

_outcomes = {"passed": 0, "failed": 0, "skipped": 0}


def pytest_runtest_logreport(report):
    if report.when == "call" or report.outcome != "passed":
        _outcomes[report.outcome] = _outcomes.get(report.outcome, 0) + 1


def pytest_sessionfinish(session, exitstatus):
    if (exitstatus == 0 and _outcomes["skipped"] and not _outcomes["passed"]
            and not _outcomes["failed"]):
        session.exitstatus = SKIPPED_EXIT


@pytest.fixture
def pool():
    """An empty pool (poollib.Pool) for the test to add hosts to; every
    host is stopped after it, and a host that did not stop cleanly fails
    the test."""
    p = poollib.Pool()
    yield p
    problems = p.close()
    if problems:
        pytest.fail("\n".join(problems), pytrace=False)


# ---- QEMU test guests (tests/fixtures/guests), built once per run --------


@pytest.fixture(scope="session")
def guests():
    """The directory holding the tiny guests (guestlib.build_tiny)."""
    out = tempfile.mkdtemp(prefix="xapid-guests-")
    try:
        guestlib.build_tiny(out)
        yield out
    finally:
        shutil.rmtree(out, ignore_errors=True)


@pytest.fixture(scope="session")
def linux_guest(guests):
    """'guests' with the Linux guest (vmlinuz, initrd.img) too; a test
    asking for it skips where it cannot be built."""
    why = guestlib.build_linux(guests)
    if why is not None:
        pytest.skip("no Linux guest: %s" % why[-300:])
    return guests
