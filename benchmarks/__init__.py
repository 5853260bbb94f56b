# SPDX-License-Identifier: Apache-2.0
"""Speed and memory benchmarks (run by hand on a GPU; never part of the test suite)."""
