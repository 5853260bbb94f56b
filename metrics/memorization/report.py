# SPDX-License-Identifier: Apache-2.0
"""The audit's outputs as bytes: audit.csv (one row per audited volume), report.json (the numbers) and the
terminal summary (what they mean)."""

from __future__ import annotations

import collections
import csv
import io
import math


from . import calibration
from .core import AuditResult, SpaceResult

MOST_EXPOSED = 10  # Training cases listed in report.json["most_exposed"].


def _number(value: float) -> str:
    return '' if value is None or not math.isfinite(float(value)) else repr(float(value))


def _columns(space: SpaceResult, train_names: list[str], prefix: str) -> tuple[list[str], list[list[str]]]:
    g = space.generated
    header = [f'{prefix}{c}' for c in ('nearest', 'similarity', 'p_value', 'ratio', 'flagged')]
    rows = []
    for i in range(len(g.index)):
        rows.append([train_names[g.index[i]], _number(g.similarity[i]),
                     _number(space.p_values[i]) if space.p_values is not None else '', _number(g.ratio[i]),
                     str(int(space.flagged[i])) if space.flagged is not None else ''])
    if prefix == '':  # Where the voxel match was found.
        header += ['shift_xyz', 'mirrored']
        for i, row in enumerate(rows):
            row += ['x'.join(str(int(s)) for s in g.shift[i]), str(int(g.mirrored[i]))]
    return header, rows


def audit_csv(result: AuditResult, train_names: list[str]) -> bytes:
    """name, then the voxel space's nearest, similarity, p_value, ratio, flagged, shift_xyz, mirrored, then the same
    five for each feature space under its name (e.g. medicalnet10_similarity). Empty cells: not defined (no
    calibration, or no positive second-nearest similarity for the ratio)."""
    header, table = ['name'], [[name] for name in result.names]
    for space in result.spaces:
        columns, rows = _columns(space, train_names, '' if space.name == 'voxel' else f'{space.name}_')
        header += columns
        for row, extra in zip(table, rows):
            row += extra
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator='\n')
    writer.writerow(header)
    writer.writerows(table)
    return buffer.getvalue().encode()


def space_report(space: SpaceResult, train_names: list[str], alpha: float) -> dict:
    """The numbers of one space, as report.json holds them."""
    audited = len(space.generated.index)
    flagged = int(space.flagged.sum()) if space.flagged is not None else None
    counts = collections.Counter(train_names[i] for i in space.generated.index)
    return {
        'space': space.description,
        'audited': audited,
        'flagged': flagged,
        'copy_rate': flagged / audited if flagged is not None else None,
        'copy_rate_ci95': list(calibration.proportion_ci(flagged, audited)) if flagged is not None else None,
        'threshold': space.threshold,
        'threshold_source': space.threshold_source,
        'alpha': alpha if space.threshold_source == 'holdout' else None,
        'null': calibration.summarize(space.null.similarity) if space.null is not None else None,
        'generated': calibration.summarize(space.generated.similarity),
        'ratio': calibration.summarize(space.generated.ratio),
        'most_exposed': [[name, count] for name, count in counts.most_common(MOST_EXPOSED)],
    }


def build_report(result: AuditResult, train_names: list[str], alpha: float, inputs: dict) -> dict:
    """report.json: the voxel space's numbers at the top level, each feature space under "feature_spaces", the
    membership inference and what was read."""
    report = space_report(result.voxel, train_names, alpha)
    report['alpha'] = alpha
    report['feature_spaces'] = {s.name: space_report(s, train_names, alpha) for s in result.features}
    report['membership'] = result.membership
    report['inputs'] = inputs
    return report



#----------------------------------------------------------------------------
# The terminal summary.


def _percent(value: float) -> str:
    return f'{100 * value:.1f}%'


def _space_lines(space: dict, name: str) -> list[str]:
    if space['flagged'] is None:
        return [f'{name}: nearest-training similarity median {space["generated"]["median"]:.4f}, max '
                f'{space["generated"]["max"]:.4f}; no threshold (no --holdout), so nothing is flagged']
    lo, hi = space['copy_rate_ci95']
    line = (f'{name}: flagged {space["flagged"]} of {space["audited"]} as likely copies (similarity > '
            f'{space["threshold"]:.4f}): copy rate {_percent(space["copy_rate"])} (95% CI {_percent(lo)}-'
            f'{_percent(hi)})')
    if space['threshold_source'] == 'holdout':
        alpha = space['alpha']
        verdict = 'above' if lo > alpha else 'below' if hi < alpha else 'consistent with'
        line += (f'; {verdict} the {_percent(alpha)} that novel volumes reach by chance (the holdout calibrates the '
                 f'threshold at alpha {alpha:g})')
        if verdict == 'below':
            line += ': the volumes are farther from the training cases than unseen real cases are'
    else:
        line += '; the threshold was given (--threshold), not calibrated, so the rate has no chance level to compare'
    return [line]


def summary(report: dict, outdir: str, holdout_cases: int | None) -> str:
    """A few lines: the spaces searched, the flags and what they mean, the membership inference, the files."""
    lines = [f'Audited {report["audited"]} volumes against {report["inputs"]["training_cases"]} training cases; '
             f'{report["space"]}.']
    if holdout_cases is None:
        lines.append('No calibrated threshold exists without --holdout: flags use --threshold, and p-values are '
                     'not defined.')
    else:
        null = report['null']
        lines.append(f'Null: {holdout_cases} holdout cases (real, never trained on) reach a nearest-training '
                     f'similarity of median {null["median"]:.4f}, 95th percentile {null["q95"]:.4f}.')
    lines += _space_lines(report, 'voxel')
    for name, space in report['feature_spaces'].items():
        lines += _space_lines(space, name)
    if report['most_exposed']:
        case, count = report['most_exposed'][0]
        lines.append(f'Most exposed training case: {case}, the nearest of {count} volume{"s" if count != 1 else ""}.')
    m = report['membership']
    if m is not None:
        beyond = m['auc'] > m['control_auc_ci95'][1]  # Above the control's interval; False when it is NaN.
        lines.append(f'Membership (D scores, training vs holdout): AUC {m["auc"]:.3f} (95% CI {m["auc_ci95"][0]:.3f}-'
                     f'{m["auc_ci95"][1]:.3f}); control (two halves of the training set) {m["control_auc"]:.3f} '
                     f'({m["control_auc_ci95"][0]:.3f}-{m["control_auc_ci95"][1]:.3f}): '
                     + ('D tells its training cases from unseen ones beyond the control: a membership leak.' if beyond
                        else 'not beyond the control.'))
    elif report['inputs'].get('membership_note'):
        lines.append(report['inputs']['membership_note'])
    lines.append(f'Wrote audit.csv, report.json, nearest_pairs.png, similarity.png to {outdir}')
    return '\n'.join(lines)
