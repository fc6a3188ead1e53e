"""Fault drills: each module starts its own stack (tests.support.faults.fault_stack),
breaks one part of it and checks that nothing accepted is lost; each records its
recovery time with ``record_recovery`` (tests.support.recoveries)."""
