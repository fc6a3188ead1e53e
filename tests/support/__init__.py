"""Helpers and fixtures shared by the test suite, the drills and the benchmarks."""
