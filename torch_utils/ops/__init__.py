# SPDX-License-Identifier: Apache-2.0
"""Custom PyTorch ops for 5D volumes: a CUDA plugin and a pure-PyTorch reference for each.

`plugins_enabled(False)` switches every op to its reference path for a block of code, whatever `impl` the
caller passed: the benchmarks use it to time a whole training iteration with and without the plugins.
"""

from __future__ import annotations

import contextlib
from typing import Iterator

_plugins_enabled = True


def plugins_active() -> bool:
    """False inside `plugins_enabled(False)`: ops then take their reference path."""
    return _plugins_enabled


@contextlib.contextmanager
def plugins_enabled(enabled: bool) -> Iterator[None]:
    global _plugins_enabled  # pylint: disable=global-statement
    previous, _plugins_enabled = _plugins_enabled, bool(enabled)
    try:
        yield
    finally:
        _plugins_enabled = previous
