#!/usr/bin/env python3
"""Runs every integration tier (t*.py) with unittest and ends with one line
'integration: N passed, N failed, N skipped'. Exit status 1 on any failure.
Under CI=true nothing may skip: a test that could not run (llama-server not
built, no network namespaces, no OpenAI SDK) counts as failed, with its
reason. tests/faults/run.py runs the fault suite the same way."""
import os
import sys
import unittest


def run_suite(directory, pattern, label):
    """Discover pattern under directory, run it, print the summary line; the exit status."""
    suite = unittest.defaultTestLoader.discover(directory, pattern=pattern, top_level_dir=directory)
    result = unittest.TextTestRunner(verbosity=2).run(suite)
    failed = len(result.failures) + len(result.errors) + len(result.unexpectedSuccesses)
    skipped = len(result.skipped)
    if os.environ.get("CI") == "true" and skipped:
        for test, why in result.skipped:
            print("%s: %s could not run under CI=true: %s" % (label, test.id(), why))
        failed += skipped
        skipped = 0
    print("%s: %d passed, %d failed, %d skipped" % (label, result.testsRun - failed - skipped, failed, skipped))
    return 1 if failed or result.testsRun == 0 else 0


if __name__ == "__main__":
    here = os.path.dirname(os.path.abspath(__file__))
    sys.path.insert(0, here)
    # CORRAL_TIERS narrows the run, e.g. "t[25]*.py" for the worker tiers
    sys.exit(run_suite(here, os.environ.get("CORRAL_TIERS", "t*.py"), "integration"))
