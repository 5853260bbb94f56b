# SPDX-License-Identifier: Apache-2.0
"""dnnlib.util: EasyDict, construction by name, open_url and its cache, Logger, format_time."""

import io
import os
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
