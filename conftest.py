# SPDX-License-Identifier: Apache-2.0
"""Puts the repository root on sys.path for the tests and gives each test session its own caches."""

import os
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

# Keep test downloads and plugin builds out of the user's real cache.
if 'DNNLIB_CACHE_DIR' not in os.environ:
    os.environ['DNNLIB_CACHE_DIR'] = tempfile.mkdtemp(prefix='sg3d-test-cache-')
