#!/usr/bin/env python3
"""The fault suite (make faults): each f*.py breaks something on purpose (a
full disk, PostgreSQL going away under load) and checks that nothing
acknowledged is lost and every refusal says its cause and fix, printing its
figures. It ends with 'faults: N passed, N failed, N skipped'; under CI=true
nothing may skip (tests/integration/run.py's rules)."""
import os
import sys

here = os.path.dirname(os.path.abspath(__file__))
integration = os.path.join(os.path.dirname(here), "integration")
sys.path.insert(0, here)
sys.path.insert(0, integration)
from run import run_suite  # noqa: E402

sys.exit(run_suite(here, os.environ.get("CORRAL_FAULTS", "f*.py"), "faults"))
