# SPDX-License-Identifier: Apache-2.0
"""persistence: pickles carry their module source and load after that source changed or vanished; the restricted
loader (safe_unpickle) runs no code but known network sources and the functions that rebuild data."""

import codecs
import collections
import hashlib
import io
import os
import pickle
import shutil
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch

import dnnlib
from torch_utils import persistence, safe_unpickle
from torch_utils.known_sources import KNOWN_SOURCES
from torch_utils.safe_unpickle import StoredCodeError, UntrustedPickleError

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


@pytest.mark.slow
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

#----------------------------------------------------------------------------
# The restricted loader (torch_utils/safe_unpickle.py).

def restricted_loads(data: bytes):
    return safe_unpickle.restricted_load(io.BytesIO(data))


class Calls:
    """Pickles as a call of `func(*args)`: what a malicious file does."""

    def __init__(self, func, *args):
        self.func, self.args = func, args

    def __reduce__(self):
        return self.func, self.args


def tiny_generator():
    from training.networks import Generator
    torch.manual_seed(0)
    return Generator(z_dim=4, c_dim=0, w_dim=4, img_shape=(4, 8, 8), img_channels=1, mapping_kwargs=dict(num_layers=1),
                     synthesis_kwargs=dict(channel_base=32, channel_max=8)).eval()


def with_source(module: torch.nn.Module, module_src: str, **changes):
    """`module` pickled as its persistent meta with another module source (and other meta changes)."""
    func, (meta,) = module.__reduce__()
    return Calls(func, dict(meta, module_src=module_src, **changes))


def test_data_a_snapshot_holds_round_trips():
    array = np.arange(6, dtype=np.float32).reshape(2, 3)
    value = collections.OrderedDict(
        tensor=torch.arange(4.0).reshape(2, 2), param=torch.nn.Parameter(torch.ones(3)), half=torch.zeros(2).half(),
        array=array, scalar=np.float64(2.5), size=torch.Size([2, 3]), dtype=torch.bfloat16,
        device=torch.device('cpu'), easy=dnnlib.EasyDict(a=1, b=[1, 2.0, 'x', (3,)], c={4, 5}, d=b'bytes'))
    loaded = restricted_loads(pickle.dumps(value))
    assert type(loaded) is collections.OrderedDict and list(loaded) == list(value)
    assert torch.equal(loaded['tensor'], value['tensor']) and isinstance(loaded['param'], torch.nn.Parameter)
    assert loaded['half'].dtype == torch.float16 and np.array_equal(loaded['array'], array)
    assert loaded['scalar'] == 2.5 and type(loaded['scalar']) is np.float64
    assert loaded['size'] == torch.Size([2, 3]) and loaded['dtype'] is torch.bfloat16
    assert loaded['device'] == torch.device('cpu') and loaded['easy'].b == [1, 2.0, 'x', (3,)]


def test_numpy_1_names_load_as_numpy_2s():
    data = pickle.dumps(np.arange(3, dtype=np.int16), protocol=2)  # Names as text lines: renaming keeps it whole.
    old = data.replace(b'numpy._core.multiarray', b'numpy.core.multiarray')
    assert old != data
    assert np.array_equal(restricted_loads(old), np.arange(3))
    with pytest.raises(UntrustedPickleError, match='not latin1'):  # How protocol 2 writes bytes, with latin1 only.
        restricted_loads(pickle.dumps(Calls(codecs.encode, 'text', 'rot13'), protocol=2))


@pytest.mark.parametrize('call', [
    (os.system, 'touch {marker}'),
    (shutil.copyfile, __file__, '{marker}'),
    (subprocess.call, ['touch', '{marker}']),
    (open, '{marker}', 'w'),
    (exec, 'open({marker!r}, "w")'),
    (getattr, 'text', 'upper'),
    (torch.load, '{marker}'),                # A torch function, not one of the admitted names.
    (collections.defaultdict, list),        # A module that is admitted for OrderedDict only.
    (np.load, '{marker}'),
], ids=lambda call: getattr(call[0], '__name__', str(call[0])))
def test_any_other_callable_is_refused_by_name(tmp_path, call):
    marker = tmp_path / 'marker'
    func, *args = call
    args = [a.format(marker=str(marker)) if isinstance(a, str) else
            [x.format(marker=str(marker)) for x in a] if isinstance(a, list) else a for a in args]
    data = pickle.dumps({'G_ema': Calls(func, *args)})
    with pytest.raises(UntrustedPickleError, match=r'it names \S+, which a network snapshot does not need'):
        restricted_loads(data)
    assert not marker.exists()


def test_a_storage_holding_a_nested_pickle_is_read_with_weights_only(tmp_path):
    # torch.storage._load_from_bytes unpickles its bytes (torch.load, weights_only=False): a pickle in the pickle.
    marker = tmp_path / 'marker'
    nested = io.BytesIO()
    torch.save(Calls(os.system, f'touch {marker}'), nested, _use_new_zipfile_serialization=False)
    data = pickle.dumps(Calls(torch.storage._load_from_bytes, nested.getvalue()))
    with pytest.raises(UntrustedPickleError, match='nested pickle of other objects than weights'):
        restricted_loads(data)
    assert not marker.exists()
    with pytest.raises(UntrustedPickleError, match='not stored as bytes'):
        restricted_loads(pickle.dumps(Calls(torch.storage._load_from_bytes, 'text')))


def test_tensors_with_backward_hooks_or_without_a_storage_are_refused():
    storage = torch.arange(2.0)._typed_storage()  # What a pickled tensor holds.
    hooks = collections.OrderedDict({0: collections.OrderedDict})  # Would run in a backward pass.
    for call, message in [
        (Calls(torch._utils._rebuild_tensor_v2, storage, 0, (2,), (1,), False, hooks), 'backward hooks'),
        (Calls(torch._utils._rebuild_parameter, torch.ones(2), True, hooks), 'backward hooks'),
        (Calls(torch._utils._rebuild_tensor_v2, 'storage', 0, (2,), (1,), False, {}), 'not from a storage'),
    ]:
        with pytest.raises(UntrustedPickleError, match=message):
            restricted_loads(pickle.dumps(call))


def test_a_network_of_this_tree_loads_and_computes_the_same():
    G = tiny_generator()
    H = restricted_loads(pickle.dumps(G))
    z = torch.randn(2, 4, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        assert torch.equal(G(z, torch.zeros(2, 0), noise_mode='const'), H(z, torch.zeros(2, 0), noise_mode='const'))


def test_altered_stored_source_is_refused_before_it_runs(tmp_path):
    marker = tmp_path / 'marker'
    G = tiny_generator()
    source = type(G)._orig_module_src
    evil = source + f'\nopen({str(marker)!r}, "w").close()\n'
    with pytest.raises(UntrustedPickleError, match=r'its Generator comes with stored code for training.networks that '
                                                   r'this release does not know \(SHA-256 [0-9a-f]{16}\.\.\.\)'):
        restricted_loads(pickle.dumps(with_source(G, evil)))
    assert not marker.exists()
    # The same source is executed by plain pickle: the check is what stands between the file and the code.
    pickle.loads(pickle.dumps(with_source(G, evil)))
    assert marker.exists()


def test_known_source_under_another_name_or_asked_for_another_class_is_refused():
    G = tiny_generator()
    layers_src = [m for m in G.modules() if type(m).__name__ == 'FullyConnectedLayer'][0]._orig_module_src
    with pytest.raises(UntrustedPickleError, match='comes with the code of training.layers under the name '
                                                   'training.networks'):
        restricted_loads(pickle.dumps(with_source(G, layers_src)))
    # Names that the known module's namespace holds but that are no persistent class defined there.
    for name in ('torch', 'VolumeInfo', 'FullyConnectedLayer', 'no_such_name'):
        with pytest.raises(UntrustedPickleError, match=f'asks training.networks for "{name}", which is not a '
                                                       f'persistent class defined there'):
            restricted_loads(pickle.dumps(with_source(G, type(G)._orig_module_src, class_name=name)))


def test_import_hooks_see_only_known_sources_and_cannot_add_code(tmp_path):
    marker = tmp_path / 'marker'
    G = tiny_generator()
    unknown = type(G)._orig_module_src + '\n# altered\n'
    seen = []

    def recording_hook(meta):
        seen.append(safe_unpickle.source_digest(meta['module_src']))
        return meta

    def injecting_hook(meta):
        return dict(meta, module_src=meta['module_src'] + f'\nopen({str(marker)!r}, "w").close()\n')
    persistence.import_hook(recording_hook)
    try:
        with pytest.raises(UntrustedPickleError, match='stored code'):
            restricted_loads(pickle.dumps(with_source(G, unknown)))
        assert seen and safe_unpickle.source_digest(unknown) not in seen  # The hooks never saw the unknown source.
        persistence.import_hook(injecting_hook)
        with pytest.raises(UntrustedPickleError, match='code from an import hook for training.layers'):
            restricted_loads(pickle.dumps(G))
        assert not marker.exists()
    finally:
        persistence._import_hooks.remove(recording_hook)
        if injecting_hook in persistence._import_hooks:
            persistence._import_hooks.remove(injecting_hook)


def test_known_sources_cover_the_trees_persistent_modules():
    # Every module outside tests/ that defines persistent classes is one whose current source is known.
    root = REPO
    defining = set()
    for folder in ('dnnlib', 'torch_utils', 'training', 'metrics', 'volumes'):
        for dirpath, _, names in os.walk(os.path.join(root, folder)):
            for name in names:
                path = os.path.join(dirpath, name)
                if name.endswith('.py') and '@persistence.persistent_class' in open(path).read():
                    defining.add(os.path.relpath(path, root)[:-3].replace(os.sep, '.'))
    assert defining == set(safe_unpickle.PERSISTENT_MODULES)
    known = safe_unpickle.known_sources()
    for module in defining:
        assert known[safe_unpickle.source_digest(persistence.module_source(__import__(module, fromlist=['_'])))] \
            == module


def _git(*args) -> str:
    return subprocess.run(['git', *args], cwd=REPO, capture_output=True, text=True, check=True).stdout


def test_the_list_of_known_sources_is_the_git_history_of_those_modules():
    # Each entry names the commit that wrote that version; every committed version but the tree's own is listed
    # (the tree's is known anyway), so that snapshots made with an earlier commit keep loading.
    try:
        if _git('rev-parse', '--is-shallow-repository').strip() != 'false':
            pytest.skip('a shallow clone lacks the history')
    except (OSError, subprocess.CalledProcessError):
        pytest.skip('not a git checkout')
    current = {module: digest for digest, module in safe_unpickle._current_sources().items()}
    history = set()
    for module in safe_unpickle.PERSISTENT_MODULES:
        path = module.replace('.', '/') + '.py'
        for commit in _git('log', '--format=%h', '--abbrev=7', '--', path).split():
            digest = hashlib.sha256(_git('show', f'{commit}:{path}').encode()).hexdigest()
            history.add((digest, module, commit))
    listed = set(KNOWN_SOURCES)
    missing = sorted(entry for entry in history - listed if current.get(entry[1]) != entry[0])
    assert not missing, 'add to torch_utils/known_sources.py:\n' + '\n'.join(f'    {entry!r},' for entry in missing)
    assert listed <= history, f'not in the git history: {sorted(listed - history)}'


def test_a_module_admitted_by_the_process_loads(tmp_path):
    moddir = tmp_path / 'mods'
    moddir.mkdir()
    _write_module(moddir, MODULE_V1.replace('class Scaler', 'class Scaler3'))
    sys.path.insert(0, str(moddir))
    try:
        import user_net
        data = pickle.dumps(user_net.Scaler3(2))
        with pytest.raises(UntrustedPickleError, match='stored code for user_net that this release does not know'):
            restricted_loads(data)
        safe_unpickle.add_known_module(user_net)
        assert torch.equal(restricted_loads(data)(torch.ones(2)), torch.tensor([0.0, 2.0]))
    finally:
        sys.path.remove(str(moddir))
        sys.modules.pop('user_net', None)


def test_known_code_that_fails_to_run_is_a_clear_error_and_leaves_no_half_module(tmp_path, monkeypatch):
    # As a snapshot of an earlier version whose code imports a module this release no longer has.
    moddir = tmp_path / 'mods'
    moddir.mkdir()
    _write_module(moddir, 'import os\nif os.environ.get("USER_NET_GONE"):\n    import a_module_that_was_removed\n'
                  + MODULE_V1.replace('class Scaler', 'class Scaler4'))
    sys.path.insert(0, str(moddir))
    try:
        import user_net
        data = pickle.dumps(user_net.Scaler4(2))
        safe_unpickle.add_known_module(user_net)
    finally:
        sys.path.remove(str(moddir))
        sys.modules.pop('user_net', None)
    monkeypatch.setenv('USER_NET_GONE', '1')
    modules = set(sys.modules)
    for _ in range(2):  # The second try fails alike: no module without its classes was kept.
        with pytest.raises(StoredCodeError, match=r"stored code of user_net \(for its Scaler4\) does not run with "
                                                  r"this release \(ModuleNotFoundError: No module named "
                                                  r"'a_module_that_was_removed'"):
            restricted_loads(data)
    assert set(sys.modules) == modules
