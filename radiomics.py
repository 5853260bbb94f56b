# SPDX-License-Identifier: Apache-2.0
"""Compare synthetic and real volumes by radiomics features, as the prostate 3D-StyleGAN2-ADA paper did.

Extracts PyRadiomics-compatible features (first order, shape, GLCM, GLRLM, GLSZM, GLDM, NGTDM; PyRadiomics' names
and settings) from every real, synthetic and (optionally) second real volume, and compares each group with the real
set: per feature the Kolmogorov-Smirnov and Levene tests, the Wasserstein distance and the QQ alignment; jointly
the Mahalanobis distance, Hotelling's T^2 and the distance between the feature correlation matrices. A second real
set (--reference) gives the real-vs-real baseline to read the numbers against.

Writes to --outdir: features.csv (one row per volume), report.json (the statistics, the features constant over
the reals, the skipped volumes and the warnings), qq_plots.png and wasserstein.png; with --select also
selection.json (the curated features). --frd adds the Frechet Radiomics Distance (v1 and v0 as frd-score 1.0.1
computes them: whole volumes, no masks, its own settings) to report.json. A used --outdir is refused unless
--overwrite.

What cannot be computed is null in report.json with the reason, never noise: features constant over the reals (up
to rounding) are left out, Mahalanobis and Hotelling's T^2 need more volumes than features, and any comparison
needs 2 volumes per group. Volumes whose mask gives no ROI (no voxel with the label, or a single voxel: a weak
generator's label map) are skipped and counted (--no-skip-empty stops instead). A warning line says when reals and
fakes look like different units.

In a folder the mask of NAME.nii.gz is NAME_seg.nii.gz beside it (as generate.py writes label maps); --seg sets
another pattern. Intensities are compared in the units the files hold: a packed dataset holds the stored units
(uint8 0-255 by default), as generate.py --units=stored writes them, where PyRadiomics' default bin width of 25
gives only about 10 gray levels; a parameter file with a smaller binWidth (--params) gives finer texture.

Examples:

\b
  # Generated volumes with their label maps against a folder of real volumes and masks.
  python radiomics.py --reals=~/data/prostate_nifti --fakes=synth --outdir=radiomics-out

\b
  # Against a dataset packed without label maps: a 40x40x24 mm box at the centre of every volume.
  python radiomics.py --reals=prostate.zip --fakes=synth --roi=box --box=40,40,24 --outdir=radiomics-out

\b
  # The paper's set-up: box for first order and texture, mask for shape, curated features, real-vs-real baseline,
  # PyRadiomics settings from a parameter file, 2 worker processes.
  python radiomics.py --reals=train_real --reference=test_real --fakes=synth --roi=split --box=40,40,24 \\
      --select --params=params.yaml --workers=2 --outdir=radiomics-out
"""

from __future__ import annotations

import csv
import io
import math
import os
import sys
from typing import Callable

import click
import numpy as np
import tqdm

import dnnlib
from metrics.radiomics import settings as settings_lib

# Imported at first use, so --help answers at once (these pull in SciPy, SimpleITK and matplotlib).
compare = dnnlib.util.lazy_import('metrics.radiomics.compare')
features = dnnlib.util.lazy_import('metrics.radiomics.features')
frd = dnnlib.util.lazy_import('metrics.radiomics.frd')
plots = dnnlib.util.lazy_import('metrics.radiomics.plots')
sources = dnnlib.util.lazy_import('metrics.radiomics.sources')

#----------------------------------------------------------------------------
# Inputs.


def is_dataset(path: str) -> bool:
    """A dataset made by dataset_tool.py: a .zip, or a folder with dataset.json at its root."""
    return path.lower().endswith('.zip') or os.path.isfile(os.path.join(path, 'dataset.json'))


def find_group(path: str, group: str, seg: str | None, options: features.ExtractOptions) -> list:
    """The cases of one group, checked: masks where needed, one volume size.

    Raises:
        ValueError: a missing path, no volumes, missing masks, volumes of different sizes.
    """
    if not os.path.exists(path):
        raise ValueError(f'{group} volumes: {path} does not exist')
    if is_dataset(path):
        if options.needs_mask and not sources.dataset_has_label_maps(path):
            raise ValueError(f'dataset {path} holds no label maps, and --roi {options.roi} needs masks: use --roi box, '
                             f'or pack the dataset with --seg')
        cases, _ = sources.zip_cases(path)  # A packed dataset holds volumes of one size.
        return cases
    cases = sources.folder_cases(path, seg)
    sources.check_masks(cases, path, seg, required=options.needs_mask)
    sources.check_sizes(cases, [case.size() for case in cases], group)
    return cases


def resolve_features(spec: str | None, params_classes: dict | None, roi: str) -> list[str]:
    """--features, else the parameter file's featureClass section, else all (all but shape for --roi box)."""
    if spec is not None:
        return features.parse_features(spec)
    if params_classes is not None:
        named = [f'{cls}_{name}' for cls, names in params_classes.items() for name in names or []]
        return features.parse_features(named + [cls for cls, names in params_classes.items() if not names])
    return features.all_feature_names([c for c in features.CLASS_FEATURES if roi != 'box' or c != 'shape'])

#----------------------------------------------------------------------------
# Outputs.


def write_file(path: str, data: bytes) -> None:
    """Write through the project's one writer (temporary file, fsync, rename): never a half-written output."""
    dnnlib.util.atomic_write_bytes(path, data)


def features_csv(rows: list[tuple[str, str, dict[str, float]]], names: list[str]) -> bytes:
    """features.csv: case, group, then one column per feature (full precision)."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator='\n')
    writer.writerow(['case', 'group', *names])
    for case, group, values in rows:
        writer.writerow([case, group, *(repr(float(values[n])) for n in names)])
    return buffer.getvalue().encode()




def figure_png(fig) -> bytes:
    buffer = io.BytesIO()
    fig.savefig(buffer, format='png')
    return buffer.getvalue()

def render_plots(values: dict[str, np.ndarray], names: list[str], report: dict) -> dict[str, bytes]:
    """qq_plots.png and wasserstein.png of the features `names` (columns of each group's [N, F], standardised here
    by the reals); the Wasserstein distances come from the report."""
    z = {g: compare.standardize(v, values['real']) for g, v in values.items()}
    distances = {key: [report[key]['per_feature'][n]['wasserstein'] for n in names]
                 if report[key] and not report[key]['reason'] else None
                 for key in ('fake_vs_real', 'reference_vs_real')}
    reference = z.get('reference') if distances['reference_vs_real'] is not None else None
    return {'qq_plots.png': figure_png(plots.qq_grid(names, z['real'], z['fake'], reference)),
            'wasserstein.png': figure_png(plots.wasserstein_bars(names, distances['fake_vs_real'],
                                                                 distances['reference_vs_real']))}

#----------------------------------------------------------------------------
# The importable core.

GROUP_WORDS = {'real': 'reals', 'fake': 'fakes', 'reference': 'reference'}  # The keys of skipped_empty.
OUTPUTS = ('features.csv', 'report.json', 'qq_plots.png', 'wasserstein.png', 'selection.json')  # What a run owns.


def extract_group(cases: list, options: features.ExtractOptions, workers: int, group: str,
                  progress: bool | None) -> np.ndarray:
    """Features [N, F] of a group's volumes (columns in options.features order), with a progress bar (progress
    None: on a terminal only)."""
    disable = None if progress is None else not progress  # tqdm's None: shown on a terminal only.
    bar = lambda it: tqdm.tqdm(it, total=len(cases), desc=f'{group:9s}', unit='vol', disable=disable,  # noqa: E731
                               file=sys.stderr, dynamic_ncols=True)
    results = features.extract_many(cases, options, workers=workers, progress=bar)
    return np.array([[r[n] for n in options.features] for r in results], dtype=np.float64).reshape(len(cases), -1)


def drop_empty_masks(cases: dict[str, list], options: features.ExtractOptions, skip: bool,
                     warn: Callable[[str], None]) -> tuple[dict[str, list], dict]:
    """Leave out, and count, the volumes whose mask gives no ROI (no voxel with the label, or an ROI that PyRadiomics'
    checks refuse, such as a single voxel), or (not skip) stop at the first.

    A generated label map without the organ, or with a speck of it, is ordinary for a weak generator, so the default
    skips and counts.

    Returns:
        The cases of each group that are kept, and report.json's skipped_empty: {'reals': n, 'fakes': m,
        ['reference': k,] 'names': [mask names], 'reasons': {reason: count}}.

    Raises:
        ValueError: such a mask when not skip, or a group left with no volume.
    """
    label = options.settings.label
    settings = options.settings if options.needs_mask else None  # The mask is an ROI, not only a box's centre.
    kept, skipped, names, reasons = {}, {}, [], {}
    for group, group_cases in cases.items():
        problems = [(case, problem) for case in group_cases
                    if (problem := sources.mask_problem(case, label, settings)) is not None]
        if problems and not skip:
            mask_name, reason, detail = problems[0][1]
            raise ValueError(f'mask {mask_name}: {reason} ({detail}), so the ROI is unusable ({len(problems)} of '
                             f'{len(group_cases)} {group} masks); --skip-empty leaves such volumes out and counts them')
        if len(problems) == len(group_cases):
            mask_name, reason, detail = problems[0][1]
            raise ValueError(f'no mask of the {len(group_cases)} {group} volumes gives an ROI (e.g. {mask_name}: '
                             f'{reason}, {detail}): nothing to measure; --params sets another label')
        if problems:
            mask_name, reason, detail = problems[0][1]
            warn(f'skipped {len(problems)} of {len(group_cases)} {GROUP_WORDS[group]} whose mask gives no ROI (e.g. '
                 f'{mask_name}: {reason}, {detail}); report.json lists them under skipped_empty; --no-skip-empty '
                 f'stops instead')
        left_out = {case for case, _ in problems}
        kept[group] = [case for case in group_cases if case not in left_out]
        skipped[GROUP_WORDS[group]] = len(problems)
        for _, (mask_name, reason, _) in problems:
            names.append(mask_name)
            reasons[reason] = reasons.get(reason, 0) + 1
    return kept, dict(skipped, names=names, reasons=reasons)


def check_units(cases: dict[str, list], warn: Callable[[str], None]) -> None:
    """Warn when a group's intensities look like other units than the reals' (features are compared as the files
    hold them)."""
    seen = {g: sources.intensities(c) for g, c in cases.items()}
    for group in ('fake', 'reference'):
        if group in seen and sources.units_differ(seen['real'], seen[group]):
            warn(f'reals and {GROUP_WORDS[group]} hold different intensity ranges: reals {seen["real"].describe()}, '
                 f'{GROUP_WORDS[group]} {seen[group].describe()} (median of each volume\'s minimum..maximum); '
                 f'features are compared in the units the files hold, so if these are different units (source vs the '
                 f'stored units of a packed dataset), make them match: generate.py --units=stored beside a dataset '
                 f'zip as --reals, --units=source beside source volumes')


def plotted_features(report: dict, names: list[str]) -> list[str]:
    """The features the plots show: those with fake-vs-real statistics (not constant over the reals, computable)."""
    section = report['fake_vs_real']
    if section['reason']:
        return []
    return [n for n in names if section['per_feature'][n]['wasserstein'] is not None]


def run(reals: str, fakes: str, outdir: str, reference: str | None = None,
        options: features.ExtractOptions | None = None, seg: str | None = None,
        select: tuple[float, float] | None = None, workers: int = 1, progress: bool | None = None,
        skip_empty: bool = True, overwrite: bool = False, warn: Callable[[str], None] | None = None,
        with_frd: bool = False) -> dict:
    """Extract, compare, plot and write the outputs; returns the report (with the selection under 'selection').

    Args:
        reals, fakes, reference: Dataset zip or folder of each group (reference may be None).
        outdir: Output folder, created when missing (only when the outputs are ready to write).
        options: Settings, features and ROI; None: PyRadiomics' defaults, every feature, the mask.
        seg: Mask file pattern in folders ('*' = the volume's name); None: NAME_seg.<ext>.
        select: (max_cv, max_rho) of the curation, or None for all features.
        workers: Extraction processes.
        progress: Progress bars on stderr; None: on a terminal only.
        skip_empty: Leave out (and count) volumes whose mask gives no ROI, instead of stopping.
        overwrite: Replace this tool's earlier outputs in a used outdir (refused otherwise).
        warn: Called with each warning (one line) as it arises; they are also in report['warnings'].
        with_frd: Also FRD v1 and v0 against the reals (report['frd']).

    Raises:
        ValueError: bad inputs (one line naming the file or option).
        click.BadParameter: a used outdir without overwrite.
        OSError: an output that cannot be written.
    """
    options = options or features.ExtractOptions()
    warnings_seen = []

    def note(message: str) -> None:
        warnings_seen.append(message)
        if warn is not None:
            warn(message)

    paths = {'real': reals, 'fake': fakes, 'reference': reference}
    cases = {g: find_group(p, g, seg, options) for g, p in paths.items() if p is not None}
    cases, skipped = drop_empty_masks(cases, options, skip_empty, note)
    check_units(cases, note)
    values = {g: extract_group(c, options, workers, g, progress) for g, c in cases.items()}
    names = list(options.features)
    rows = [(case.name, g, dict(zip(names, row))) for g in cases for case, row in zip(cases[g], values[g])]
    constant = [names[k] for k in np.flatnonzero(compare.constant_columns(values['real']))]
    selection = None
    if select is not None and len(values['real']) >= 2:
        selection = compare.select_features(values['real'], names, *select)
        if not selection['kept']:
            raise ValueError('--select kept no feature: raise --max-cv or --max-rho')
    elif select is not None:
        note('--select needs at least 2 real volumes: every feature is kept')
    kept = selection['kept'] if selection else names
    columns = [names.index(n) for n in kept]
    report = {'volumes': {g: len(c) for g, c in cases.items()}}
    for g in ('fake', 'reference'):
        section = (compare.compare(values[g][:, columns], values['real'][:, columns], kept, g)
                   if g in values else None)
        report[f'{g}_vs_real'] = section
        reason = section and (section['reason'] or section['joint']['reason'])
        if reason:
            note(f'{g}-vs-real: {"undefined" if section["reason"] else "Mahalanobis and Hotelling null"}: {reason}')
    report.update(constant_features=constant, constant_rule=f'real SD <= {compare.CONSTANT_RTOL:g} * max(1, |real '
                  f'mean|): left out of the comparison and the plots', skipped_empty=skipped, warnings=warnings_seen)
    if with_frd:
        report['frd'] = frd.frd_report(cases, workers, progress)
    outputs = {'features.csv': features_csv(rows, names), 'report.json': dnnlib.util.json_bytes(report)}
    shown = plotted_features(report, kept)
    if shown:
        outputs.update(render_plots({g: v[:, [names.index(n) for n in shown]] for g, v in values.items()}, shown,
                                    report))
    if selection is not None:
        outputs['selection.json'] = dnnlib.util.json_bytes(selection)
    # Only now: a failure above leaves no folder and no file behind (and, with overwrite, the earlier outputs).
    dnnlib.cli.prepare_outdir(outdir, overwrite, OUTPUTS)
    for fname, data in outputs.items():
        write_file(os.path.join(outdir, fname), data)
    return dict(report, selection=selection, written=list(outputs))


def number(value, spec: str) -> str:
    return '-' if value is None or not math.isfinite(value) else format(value, spec)


def summary(report: dict, outdir: str) -> str:
    """A few lines for the terminal: the joint statistics of each comparison and where the outputs are."""
    lines = []
    for key in ('fake_vs_real', 'reference_vs_real'):
        section = report.get(key)
        if not section:
            continue
        if section['reason']:
            lines.append(f'{key:18s} no statistics: {section["reason"]}')
            continue
        j = section['joint']
        line = (f'{key:18s} Mahalanobis {number(j["mahalanobis"], ".4g")}  Hotelling T2 '
                f'{number(j["hotelling_t2"], ".4g")} (p {number(j["hotelling_p"], ".3g")})  correlation Frobenius '
                f'{number(j["corr_frobenius"], ".4g")}  over {j["features"]} features')
        lines.append(line + (f' ({j["reason"].split(":")[0]})' if j['reason'] else ''))
    constant = report.get('constant_features') or []
    if constant:
        shown = ', '.join(constant[:3]) + (', ...' if len(constant) > 3 else '')
        lines.append(f'{len(constant)} features constant over the reals, left out of the comparison: {shown} '
                     f'(report.json constant_features)')
    skipped = report.get('skipped_empty') or {}
    if skipped.get('names'):
        counts = ', '.join(f'{n} {group}' for group, word in GROUP_WORDS.items() if (n := skipped.get(word)))
        lines.append(f'Skipped volumes whose mask gives no ROI: {counts} (report.json skipped_empty)')
    if report.get('frd'):
        lines.append(frd.summary_line(report['frd']))
    if report.get('selection'):
        s = report['selection']
        dropped = len(s['dropped_cv']) + len(s['dropped_constant']) + len(s['dropped_rho'])
        lines.append(f'--select kept {len(s["kept"])} of {len(s["kept"]) + dropped} features (see selection.json)')
    written = report.get('written', [])
    if 'qq_plots.png' not in written:
        lines.append('No plots: no feature could be compared')
    lines.append(f'Wrote {", ".join(written)} to {outdir}')
    return '\n'.join(lines)

#----------------------------------------------------------------------------
# CLI.


def parse_box(text: str | None) -> tuple[float, float, float] | None:
    """'40,40,24' or '40' (mm) -> (x, y, z)."""
    if text is None:
        return None
    try:
        parts = [float(v) for v in text.split(',')]
    except ValueError:
        parts = []
    if len(parts) == 1:
        parts *= 3
    if len(parts) != 3 or min(parts) <= 0:
        raise click.BadParameter(f'"{text}" is not a box size: x,y,z or one number, positive, in mm',
                                 param_hint='--box')
    return tuple(parts)


def check_outdir(outdir: str, overwrite: bool) -> None:
    """Refuse a file or, without --overwrite, a used folder, before any work; nothing is created or removed yet (that
    happens when the outputs are ready, so a failure leaves no folder and keeps earlier outputs)."""
    path = os.path.expanduser(outdir)
    if os.path.exists(path) and not os.path.isdir(path):
        raise click.BadParameter(f'"{outdir}" is a file; expected a folder', param_hint='--outdir')
    if os.path.isdir(path) and not overwrite:
        dnnlib.cli.prepare_outdir(outdir, False, OUTPUTS)  # Refuses a used folder; an empty one stays as it is.


@click.command(cls=dnnlib.cli.Command, renamed={'--verbose': '--progress'}, help=__doc__)
# Inputs and outputs.
@click.option('--reals', help='Real volumes: dataset zip (dataset_tool.py) or folder of volumes', metavar='PATH',
              type=dnnlib.cli.PATH, required=True)
@click.option('--fakes', help='Generated volumes: folder (masks as NAME_seg.<ext> beside them)', metavar='PATH',
              type=dnnlib.cli.PATH, required=True)
@click.option('--reference', help='A second real set for the real-vs-real baseline: zip or folder', metavar='PATH',
              type=dnnlib.cli.PATH)
@dnnlib.cli.outdir_option('Where to write features.csv, report.json and the plots (a new or empty folder)',
                          default='radiomics-out')
@click.option('--seg', help='Mask file pattern in folders, "*" = the volume\'s name', metavar='GLOB',
              show_default='*_seg.<ext>')
# Features.
@click.option('--roi', help='Region: mask (label value), box (fixed mm box), split (box; shape on the mask)',
              type=click.Choice(settings_lib.ROI_MODES), default='mask', show_default=True)
@click.option('--box', 'box_text', help='Box size for --roi box/split, centred on the mask (or the volume)',
              metavar='X,Y,Z_MM')
@click.option('--features', 'feature_spec', help='Classes or names, e.g. firstorder,glcm_Contrast', metavar='LIST',
              show_default='all')
@click.option('--params', help='PyRadiomics parameter file (YAML or JSON): setting, imageType, featureClass',
              metavar='PATH', type=dnnlib.cli.PATH)
# Curation.
@click.option('--select', is_flag=True, help='Curate the features as the paper: variability, then redundancy')
@click.option('--max-cv', help='--select: drop features whose coefficient of variation over the reals exceeds this',
              type=dnnlib.cli.FiniteFloatRange(min=0, min_open=True), default=1.0, show_default=True)
@click.option('--max-rho', help='--select: of each pair with |Spearman rho| above this, drop one',
              type=dnnlib.cli.FiniteFloatRange(min=0, max=1), default=0.9, show_default=True)
@click.option('--frd', 'with_frd', is_flag=True,
              help='Also the Frechet Radiomics Distance v1 and v0 (frd-score 1.0.1; whole volumes) in report.json')
# Performance.
@click.option('--workers', help='Processes extracting features', type=click.IntRange(min=1), default=1,
              show_default=True)
@dnnlib.cli.progress_option()
@click.option('--skip-empty/--no-skip-empty', default=True, show_default=True,
              help='Leave out and count volumes whose mask gives no ROI (no voxel with the label, or a single '
                   'voxel: a weak generator\'s label map), or stop at the first')
@dnnlib.cli.overwrite_option()
def main(reals: str, fakes: str, reference: str | None, outdir: str, seg: str | None, roi: str, box_text: str | None,
         feature_spec: str | None, params: str | None, select: bool, max_cv: float, max_rho: float, with_frd: bool,
         workers: int, progress: bool | None, skip_empty: bool, overwrite: bool) -> None:
    check_outdir(outdir, overwrite)
    try:
        settings, classes = settings_lib.read_params(params) if params else (
            settings_lib.Settings(), None)
    except ValueError as e:
        raise click.BadParameter(str(e), param_hint='--params') from None
    try:
        names = resolve_features(feature_spec, classes, roi)
    except ValueError as e:
        raise click.BadParameter(str(e), param_hint='--features' if feature_spec else '--params') from None
    try:
        options = features.ExtractOptions(settings=settings, features=tuple(names), roi=roi,
                                          box_mm=parse_box(box_text))
    except ValueError as e:
        raise click.BadParameter(str(e), param_hint='--roi') from None
    print(f'Settings: {settings_lib.describe(settings)}; {len(options.features)} features; roi {roi}')
    try:
        report = run(reals, fakes, outdir, reference, options, seg, (max_cv, max_rho) if select else None, workers,
                     progress, skip_empty, overwrite, warn=lambda line: print(f'Warning: {line}', file=sys.stderr),
                     with_frd=with_frd)
    except (ValueError, OSError) as e:
        raise click.ClickException(' '.join(str(e).split())) from None
    print(summary(report, outdir))


if __name__ == '__main__':
    main()
