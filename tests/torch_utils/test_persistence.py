# SPDX-License-Identifier: Apache-2.0
"""persistence: pickles carry their module source and load after that source changed or vanished."""

import pickle
import subprocess
import sys
import textwrap

import torch

from torch_utils import persistence

REPO = str(__import__('pathlib').Path(__file__).resolve().parents[2])

MODULE_V1 = textwrap.dedent('''
    import torch
    from torch_utils import persistence

    @persistence.persistent_class
    class Scaler(torch.nn.Module):
        def __init__(self, channels, gain=2.0):
            super().__init__()
            self.weight = torch.nn.Parameter(torch.arange(channels, dtype=torch.float32))
            self.gain = gain

        def forward(self, x):
            return x * self.weight * self.gain
''')


def _write_module(directory, source):
    (directory / 'user_net.py').write_text(source)


def test_pickle_loads_after_source_changes_in_fresh_process(tmp_path):
    moddir = tmp_path / 'mods'
    moddir.mkdir()
    _write_module(moddir, MODULE_V1)
    sys.path.insert(0, str(moddir))
    try:
        import user_net
        net = user_net.Scaler(3, gain=3.0)
        assert persistence.is_persistent(net) and net.init_kwargs == {'gain': 3.0}
        x = torch.tensor([1.0, 2.0, 3.0])
        expected = net(x)
        import copy
        assert torch.equal(copy.deepcopy(net)(x), expected)
        pkl = tmp_path / 'net.pkl'
        pkl.write_bytes(pickle.dumps(net))
    finally:
        sys.path.remove(str(moddir))
        sys.modules.pop('user_net', None)

    # Break the module on disk: the pickle must not need it.
    _write_module(moddir, MODULE_V1.replace('x * self.weight * self.gain', 'x * 0'))
    script = textwrap.dedent(f'''
        import pickle, sys, torch
        sys.path.insert(0, {str(moddir)!r})
        net = pickle.load(open({str(pkl)!r}, 'rb'))
        assert 'user_net' not in sys.modules, 'unpickling imported the original module'
        print(net(torch.tensor([1.0, 2.0, 3.0])).tolist())
    ''')
    out = subprocess.run([sys.executable, '-c', script], cwd=REPO, capture_output=True, text=True, check=True)
    assert eval(out.stdout.strip()) == expected.tolist()


def test_import_hook_can_patch_source(tmp_path):
    moddir = tmp_path / 'mods'
    moddir.mkdir()
    _write_module(moddir, MODULE_V1.replace('class Scaler', 'class Scaler2'))
    sys.path.insert(0, str(moddir))
    try:
        import user_net
        data = pickle.dumps(user_net.Scaler2(2))
    finally:
        sys.path.remove(str(moddir))
        sys.modules.pop('user_net', None)

    def hook(meta):
        meta['module_src'] = meta['module_src'].replace('self.gain = gain', 'self.gain = gain\n        self.patched = True')
        meta['module_name'] = 'not_loaded'
        return meta
    persistence.import_hook(hook)
    try:
        net = pickle.loads(data)
    finally:
        persistence._import_hooks.remove(hook)
    assert type(net).__name__ == 'Scaler2'
    assert torch.equal(net(torch.ones(2)), torch.tensor([0.0, 2.0]))
