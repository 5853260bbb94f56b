# SPDX-License-Identifier: Apache-2.0
"""metrics.downstream.experiment's plan and report's numbers: which cases each run trains on, the means, intervals
and counts of summary.json, the CSV and the figure."""

import csv
import io
import json
import math

import numpy as np
import pytest
import scipy.stats

import dnnlib
from metrics.downstream import experiment, report
from metrics.downstream.experiment import Run, Scores

#----------------------------------------------------------------------------
# The plan.


def test_runs_draw_nested_real_subsets_and_the_mixed_ratio():
    runs = experiment.plan(['real', 'synthetic', 'mixed'], [0.25, 0.5, 1], [7, 8], n_real=20, n_synthetic=50,
                           ratio=2)
    assert [r.name for r in runs] == ['real@0.25'] * 2 + ['real@0.5'] * 2 + ['real@1'] * 2 + ['synthetic'] * 2 + \
        ['mixed@0.25'] * 2 + ['mixed@0.5'] * 2 + ['mixed@1'] * 2
    by = {(r.name, r.seed): r for r in runs}
    for seed in (7, 8):
        quarter, half, full = (by[(f'real@{f}', seed)].real for f in ('0.25', '0.5', '1'))
        assert (len(quarter), len(half), full) == (5, 10, tuple(range(20)))
        assert set(quarter) <= set(half)  # Nested: a larger share adds cases.
        assert by[('mixed@0.5', seed)].real == half and len(by[('mixed@0.5', seed)].synthetic) == 20
        assert by[('synthetic', seed)].synthetic == tuple(range(50)) and by[('synthetic', seed)].real == ()
        assert by[('synthetic', seed)].fraction == 0
    assert by[('real@0.5', 7)].real != by[('real@0.5', 8)].real
    assert experiment.plan(['real'], [1], [0], 20, 0, 1)[0].name == 'real'  # Not swept: no fraction in the name.
    assert experiment.plan(['mixed'], [0.5], [0], 20, 10, 1)[0].name == 'mixed@0.5'
    with pytest.raises(ValueError, match='--synthetic-ratio 2 asks for 40 synthetic volumes beside the 20 real'):
        experiment.plan(['mixed'], [1], [0], 20, 30, 2)
    assert experiment.synthetic_needed(['real', 'synthetic', 'mixed'], [0.5, 1], 20, 2) == 40
    assert experiment.synthetic_needed(['synthetic'], [1], 20, 2) == 20

#----------------------------------------------------------------------------
# The numbers.


def scores(dice, hd, name='real', seed=0, fraction=1.0, source='test') -> Scores:
    run = Run(name, fraction, seed, (0, 1, 2), (), False)
    return Scores(run, source, [f'c{i}' for i in range(len(dice))], np.array(dice, float), np.array(hd, float))


def test_the_interval_is_scipys_percentile_bootstrap():
    values = np.array([0.61, 0.72, 0.55, 0.8, 0.67, 0.7])
    expected = scipy.stats.bootstrap((values,), np.mean, n_resamples=10000, method='percentile',
                                     rng=np.random.default_rng(0)).confidence_interval
    assert report.interval(values) == [expected.low, expected.high]
    assert report.interval(np.array([0.5, np.nan])) is None
    assert report.interval(np.array([0.5, 0.5, 0.5])) == [0.5, 0.5]


def test_summary_means_skip_undefined_scores_and_count_them():
    nan = math.nan
    # Two seeds, three cases, two labels. Case c2 lacks label 1 (no Dice); seed 1 missed label 1 of c1 (Dice 0, no
    # HD95).
    seed0 = scores([[0.8, 0.6], [0.7, 0.5], [nan, 0.9]], [[2.0, 4.0], [3.0, 5.0], [nan, 1.0]])
    seed1 = scores([[0.6, 0.4], [0.0, 0.5], [nan, 0.7]], [[4.0, 6.0], [nan, 5.0], [nan, 3.0]], seed=1)
    entry = report.summarise([seed0, seed1], ['a', 'b'])
    case_means = np.array([[0.7, 0.6, 0.9], [0.5, 0.25, 0.7]])  # [seed, case]
    assert entry['dice'] == pytest.approx(case_means.mean())
    assert entry['dice_per_seed'] == pytest.approx(case_means.mean(axis=1).tolist())
    assert entry['dice_ci95'] == report.interval(case_means.mean(axis=0))
    assert entry['hd95'] == pytest.approx(np.mean([3.0, 4.0, 1.0, 5.0, 5.0, 3.0]))
    assert entry['hd95_missing'] == 1 and entry['per_label']['a']['hd95_missing'] == 1
    assert entry['per_label']['a']['dice'] == pytest.approx(np.mean([0.8, 0.7, 0.6, 0.0]))
    assert entry['per_label']['a']['cases_without_label'] == 1
    assert entry['per_label']['b']['hd95'] == pytest.approx(np.mean([4.0, 5.0, 1.0, 6.0, 5.0, 3.0]))
    assert (entry['seeds'], entry['cases'], entry['train_real']) == ([0, 1], 3, 3)


def test_summary_csv_and_json_write_undefined_scores_as_empty_and_null():
    nan = math.nan
    all_scores = [scores([[0.8, nan]], [[2.0, nan]]), scores([[0.9, 0.5]], [[1.0, 2.0]], source='generated'),
                  scores([[0.4, nan]], [[6.0, nan]], name='synthetic', fraction=0.0)]
    result = report.summary(all_scores, ['a', 'b'], protocol={'seeds': [0]})
    assert list(result['regimes']) == ['real', 'synthetic']
    assert result['label_consistency']['segmenter'] == 'real'
    assert result['label_consistency']['generated']['dice'] == pytest.approx(0.7)
    assert result['label_consistency']['real']['dice'] == pytest.approx(0.8)
    parsed = json.loads(dnnlib.util.json_bytes(result))
    assert parsed['regimes']['real']['per_label']['b']['dice'] is None
    rows = report.score_rows(all_scores, ['a', 'b'])
    text = report.csv_bytes([r for r in rows if r['source'] == 'test'], report.ROW_FIELDS).decode()
    table = list(csv.reader(io.StringIO(text)))
    assert table[0] == list(report.ROW_FIELDS)
    assert table[1:] == [['real', '1.0', '0', 'c0', 'a', '0.8', '2.0'], ['real', '1.0', '0', 'c0', 'b', '', ''],
                         ['synthetic', '0.0', '0', 'c0', 'a', '0.4', '6.0'], ['synthetic', '0.0', '0', 'c0', 'b', '',
                                                                               '']]
    png = report.dice_figure(result)
    assert png[:8] == b'\x89PNG\r\n\x1a\n'
    assert 'real ' in report.table(result) and 'label consistency (real segmenter)' in report.table(result)
