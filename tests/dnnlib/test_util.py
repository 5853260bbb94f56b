# SPDX-License-Identifier: Apache-2.0
"""dnnlib.util: EasyDict, construction by name, open_url and its cache, Logger, format_time."""

import io
import os
import resource
import signal
import subprocess
import sys

import pytest

import dnnlib
from dnnlib import util


def test_easydict_attribute_access():
    d = dnnlib.EasyDict(a=1)
    d.b = 2
    assert d == {'a': 1, 'b': 2} and d.a == 1
    del d.a
    with pytest.raises(AttributeError):
        _ = d.a


def test_construct_class_by_name():
    obj = util.construct_class_by_name(class_name='collections.OrderedDict', x=1)
    assert type(obj).__name__ == 'OrderedDict' and obj['x'] == 1
    assert util.call_func_by_name(3, func_name='math.sqrt') == pytest.approx(3 ** 0.5)
    assert util.get_obj_by_name('os.path.join') is os.path.join
    with pytest.raises(ValueError, match='Cannot find'):
        util.get_obj_by_name('os.path.no_such_function')


def test_cache_dir_env_override(tmp_path, monkeypatch):
    monkeypatch.setenv('DNNLIB_CACHE_DIR', str(tmp_path))
    path = util.make_cache_dir_path('downloads', 'x.bin')
    assert path == str(tmp_path / 'downloads' / 'x.bin') and (tmp_path / 'downloads').is_dir()


def test_open_url_plain_path_and_file_url(tmp_path):
    f = tmp_path / 'data.bin'
    f.write_bytes(b'hello')
    with util.open_url(str(f)) as fh:
        assert fh.read() == b'hello'
    with util.open_url(f.as_uri()) as fh:
        assert fh.read() == b'hello'
    with pytest.raises(FileNotFoundError, match='No such file'):
        util.open_url(str(tmp_path / 'missing.bin'))


def test_open_url_cache_hit_needs_no_network(tmp_path, monkeypatch):
    monkeypatch.setenv('DNNLIB_CACHE_DIR', str(tmp_path))
    url = 'https://example.invalid/models/detector.pt'
    cached = util.url_cache_path(url)
    with open(cached, 'wb') as f:
        f.write(b'weights')

    def no_network(*_args, **_kwargs):
        raise AssertionError('the network was used despite a cached copy')
    monkeypatch.setattr(util.urllib.request, 'urlopen', no_network)
    with util.open_url(url) as fh:
        assert fh.read() == b'weights'


def test_open_url_downloads_once_atomically(tmp_path, monkeypatch):
    monkeypatch.setenv('DNNLIB_CACHE_DIR', str(tmp_path))
    calls = []

    def fake_urlopen(url, timeout):
        calls.append(url)
        return io.BytesIO(b'payload')
    monkeypatch.setattr(util.urllib.request, 'urlopen', fake_urlopen)
    url = 'https://example.invalid/a/b.pkl'
    assert util.open_url(url, return_filename=True) == util.url_cache_path(url)
    assert open(util.url_cache_path(url), 'rb').read() == b'payload'
    util.open_url(url).close()
    assert len(calls) == 1
    leftovers = [n for n in os.listdir(os.path.dirname(util.url_cache_path(url))) if n.startswith('.download-')]
    assert leftovers == []


def test_open_url_offline_error_names_url_and_destination(tmp_path, monkeypatch):
    monkeypatch.setenv('DNNLIB_CACHE_DIR', str(tmp_path))

    def offline(*_args, **_kwargs):
        raise util.urllib.error.URLError('no route to host')
    monkeypatch.setattr(util.urllib.request, 'urlopen', offline)
    url = 'https://example.invalid/metrics/inception.pt'
    with pytest.raises(OSError) as info:
        util.open_url(url, num_attempts=2)
    message = str(info.value)
    assert '\n' not in message and url in message and util.url_cache_path(url) in message


def test_logger_tees_stdout(tmp_path):
    log = tmp_path / 'log.txt'
    stdout = sys.stdout
    with util.Logger(str(log)):
        print('to both')
    assert sys.stdout is stdout
    assert log.read_text() == 'to both\n'


@pytest.mark.parametrize('seconds, text', [(5, '5s'), (65, '1m 05s'), (3725, '1h 02m 05s'), (90061, '1d 01h 01m')])
def test_format_time(seconds, text):
    assert util.format_time(seconds) == text

#----------------------------------------------------------------------------
# The one writer.


def test_atomic_write_gives_the_usual_permissions_and_leaves_no_temporary(tmp_path):
    umask = os.umask(0o022)
    try:
        util.atomic_write(str(tmp_path / 'a.bin'), lambda f: f.write(b'abc'))
    finally:
        os.umask(umask)
    assert (tmp_path / 'a.bin').read_bytes() == b'abc' and os.listdir(tmp_path) == ['a.bin']
    assert (tmp_path / 'a.bin').stat().st_mode & 0o777 == 0o644


@pytest.mark.parametrize('failure', ['write', 'verify', 'empty'])
def test_a_failed_write_keeps_the_old_file_and_leaves_nothing_else(tmp_path, failure):
    (tmp_path / 'a.bin').write_bytes(b'old')

    def write(f):
        if failure == 'write':
            raise OSError(28, 'No space left on device')
        if failure == 'verify':
            f.write(b'new')

    def verify(path):
        raise OSError('reads back short')

    with pytest.raises(util.WriteError) as info:
        util.atomic_write(str(tmp_path / 'a.bin'), write, verify=verify)
    reason = {'write': 'No space left on device', 'verify': 'reads back short', 'empty': 'nothing was written'}
    assert str(info.value) == f'cannot write {tmp_path / "a.bin"}: {reason[failure]}'
    assert os.listdir(tmp_path) == ['a.bin'] and (tmp_path / 'a.bin').read_bytes() == b'old'


def _run_limited(code: str, limit: int) -> subprocess.CompletedProcess:
    """Run Python code with files limited to `limit` bytes, as on a full disk (EFBIG instead of a signal)."""
    def limit_files():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    return subprocess.run([sys.executable, '-c', code], preexec_fn=limit_files, capture_output=True, text=True,
                          cwd=root)


def test_append_text_on_a_full_disk_adds_all_of_a_line_or_nothing(tmp_path):
    log = tmp_path / 'stats.jsonl'
    code = (f'from dnnlib import util\n'
            f'for i in range(100):\n'
            f'    util.append_text({str(log)!r}, "line %03d " % i + "x" * 20 + "\\n")\n')
    result = _run_limited(code, 1000)
    assert result.returncode != 0 and f'WriteError: cannot write {log}: File too large' in result.stderr
    lines = log.read_text().splitlines(keepends=True)
    assert len(lines) == 1000 // 30 and all(len(line) == 30 for line in lines)  # 33 whole lines of 30 bytes.


def test_atomic_write_on_a_full_disk_raises_and_leaves_nothing(tmp_path):
    code = (f'from dnnlib import util\n'
            f'util.atomic_write({str(tmp_path / "big.bin")!r}, lambda f: f.write(bytes(5000)))\n')
    result = _run_limited(code, 1000)
    assert f'WriteError: cannot write {tmp_path / "big.bin"}: File too large' in result.stderr
    assert os.listdir(tmp_path) == []


def test_stale_temporaries_of_dead_processes_are_removed(tmp_path):
    dead = subprocess.Popen([sys.executable, '-c', 'pass'])
    dead.wait()
    host = util._host_tag()
    names = {
        'dead': f'.{host}-{dead.pid}-abcdef.tmp.x.nii.gz',
        'alive': f'.{host}-{os.getpid()}-abcdef.tmp.y.nii.gz',
        'other_host': f'.elsewhere_{host}-{dead.pid}-abcdef.tmp.z.pkl',
        'user_file': '.hidden.tmp',
    }
    for name in names.values():
        (tmp_path / name).write_bytes(b'x')
    assert util.remove_stale_temporaries(str(tmp_path)) == [str(tmp_path / names['dead'])]
    assert sorted(os.listdir(tmp_path)) == sorted(v for k, v in names.items() if k != 'dead')
    assert os.path.basename(util.temporary_path(str(tmp_path / 'v.nii.gz'))).endswith('.tmp.v.nii.gz')


def test_json_bytes_writes_reports_that_strict_json_parsers_read():
    import json

    import numpy as np
    report = {'fid': float('nan'), 'auc': np.float32(0.75), 'count': np.int64(3), 'flag': np.bool_(True),
              'ci': (np.float64(-np.inf), 1.5), 7: [{'p': np.float64(0.25)}]}
    text = util.json_bytes(report).decode()
    assert text.endswith('}\n') and 'NaN' not in text and 'Infinity' not in text
    parsed = json.loads(text, parse_constant=lambda name: pytest.fail(f'{name} in the JSON'))
    assert parsed == {'fid': None, 'auc': 0.75, 'count': 3, 'flag': True, 'ci': [None, 1.5], '7': [{'p': 0.25}]}
