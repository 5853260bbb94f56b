# SPDX-License-Identifier: Apache-2.0
"""Options of short train.py runs on small phantom datasets, shared by the train.py, training loop and fault tests."""

import os

TINY_CFG = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), 'data', 'tiny.toml')
SIZE = '16x16x8'  # x, y, z: the fault tests' phantoms.
# A tiny network (tests/data/tiny.toml), a snapshot and a tick after every minibatch of 4.
TRAIN = [f'--cfg={TINY_CFG}', '--batch=4', '--workers=0', '--metrics=none', '--snap=1', '--kimg-per-tick=0.004']
# The demo preset's networks, a snapshot after every tick.
FAST = ['--cfg=demo', '--batch=4', '--workers=0', '--metrics=none', '--snap=1']
