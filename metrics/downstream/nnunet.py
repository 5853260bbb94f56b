# SPDX-License-Identifier: Apache-2.0
"""The downstream runs through nnU-Net v2's own commands (experiment.Backend), for users with GPUs.

Everything lives under one folder (OUTDIR/nnunet), which nnU-Net's three environment variables point at:

    raw/DatasetNNN_<run>/      imagesTr/CASE_0000.nii.gz, labelsTr/CASE.nii.gz, dataset.json: one dataset per run
                               (regime, fraction, seed), numbered from 1 in run order
    preprocessed/, results/    nnU-Net's own
    inputs/<tag>/imagesTs/     the cases to segment ('test': the real test cases; 'generated': the synthetic volumes
    inputs/<tag>/labelsTs/     for label consistency) and their label maps, for nnUNetv2_evaluate_folder
    inputs/<tag>/cases.json    the file name of each case -> its name
    predictions/DatasetNNN_<run>/<tag>/
    logs/DatasetNNN_<run>-<step>.log   each command's output

Per run: nnUNetv2_plan_and_preprocess -d NNN -c CONFIG --verify_dataset_integrity, nnUNetv2_train NNN CONFIG all
-tr TRAINER (fold 'all': every training case, no cross-validation, as the runs are compared on the fixed real test
cases), nnUNetv2_predict -d NNN -c CONFIG -f all -tr TRAINER on each input folder. The predictions are scored with
the same MONAI metrics as the MONAI backend. Images are written in the real dataset's stored units with its spacing,
direction and centre; labels as the consecutive values 0, 1, 2, ... nnU-Net needs (the class indices, in the order
of the packed values).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from typing import Callable

import numpy as np

import dnnlib
from volumes.contract import VolumeInfo

COMMANDS = ('nnUNetv2_plan_and_preprocess', 'nnUNetv2_train', 'nnUNetv2_predict')
INSTALL = 'pip install nnunetv2==2.8.1'
MAX_DATASETS = 999  # nnU-Net's dataset ids have three digits.


def check_installed() -> None:
    """ValueError (one line saying how to install it) unless nnU-Net v2's commands are on PATH."""
    missing = [c for c in COMMANDS if shutil.which(c) is None]
    if missing:
        raise ValueError(f'--backend nnunet needs nnU-Net v2, whose command {missing[0]} is not on PATH: install it '
                         f'with "{INSTALL}" (and a CUDA build of PyTorch for a GPU)')


def dataset_labels(info: VolumeInfo) -> dict[str, int]:
    """dataset.json's labels {name: consecutive value}, checked as generate.py --layout nnunet checks them."""
    import click

    from training.generation import nnunet_labels
    try:
        return {name: index for index, _, name in nnunet_labels(info)}
    except click.BadParameter as e:
        raise ValueError(f'--backend nnunet: {e.message}') from None


class NnunetBackend:
    """Trains one nnU-Net per run and predicts with it, through nnU-Net's commands (experiment.Backend)."""

    def __init__(self, root: str, info: VolumeInfo, configuration: str = '3d_fullres',
                 trainer: str = 'nnUNetTrainer', device: str = 'cuda') -> None:
        self.root, self.info, self.configuration, self.trainer, self.device = root, info, configuration, trainer, device
        self.labels = dataset_labels(info)
        self.datasets = 0
        self.env = dict(os.environ, **{key: os.path.join(root, sub) for key, sub in (
            ('nnUNet_raw', 'raw'), ('nnUNet_preprocessed', 'preprocessed'), ('nnUNet_results', 'results'))})
        for sub in ('raw', 'preprocessed', 'results', 'logs'):
            os.makedirs(os.path.join(root, sub), exist_ok=True)

    def steps(self) -> int:
        return 1

    # Files.

    def _write_volume(self, path: str, array: np.ndarray) -> None:
        from volumes import volume_io
        os.makedirs(os.path.dirname(path), exist_ok=True)
        volume_io.write_volume(path, array, self.info.spacing, self.info.direction, self.info.origin(array.shape[-3:]))

    def _write_cases(self, cases: list, images: str, labels: str, names: list[str]) -> None:
        for case, name in zip(cases, names):
            for c, channel in enumerate(case.image):  # One file per channel: NAME_0000, NAME_0001, ...
                self._write_volume(os.path.join(images, f'{name}_{c:04d}.nii.gz'), channel)
            self._write_volume(os.path.join(labels, f'{name}.nii.gz'), case.labels)

    def write_dataset(self, run, cases: list) -> tuple[int, str]:
        """The raw dataset of one run: (id, DatasetNNN_name)."""
        self.datasets += 1
        if self.datasets > MAX_DATASETS:
            raise ValueError(f'--backend nnunet: more than {MAX_DATASETS} runs do not fit nnU-Net\'s dataset ids')
        number = self.datasets
        slug = run.name.replace('@', '-f').replace('.', 'p')
        name = f'Dataset{number:03d}_{slug}-s{run.seed}'
        folder = os.path.join(self.root, 'raw', name)
        names = [f'{"real" if i < len(run.real) else "synth"}{i:04d}' for i in range(len(cases))]
        self._write_cases(cases, os.path.join(folder, 'imagesTr'), os.path.join(folder, 'labelsTr'), names)
        description = dict(channel_names={str(c): n for c, n in enumerate(self.info.channels)}, labels=self.labels,
                           numTraining=len(cases), file_ending='.nii.gz', name=name,
                           description=f'stylegan2-ada-3d downstream.py: {run.name}, seed {run.seed}')
        dnnlib.util.atomic_write_text(os.path.join(folder, 'dataset.json'), json.dumps(description, indent=2) + '\n')
        dnnlib.util.atomic_write_text(os.path.join(folder, 'cases.json'),
                                      json.dumps(dict(zip(names, [c.name for c in cases])), indent=2) + '\n')
        return number, name

    def _inputs(self, cases: list, tag: str) -> str:
        """inputs/<tag>/imagesTs (written at its first use) for nnUNetv2_predict."""
        folder = os.path.join(self.root, 'inputs', tag)
        if not os.path.isdir(os.path.join(folder, 'imagesTs')):
            names = [f'{tag}{i:04d}' for i in range(len(cases))]
            self._write_cases(cases, os.path.join(folder, 'imagesTs'), os.path.join(folder, 'labelsTs'), names)
            dnnlib.util.atomic_write_text(os.path.join(folder, 'cases.json'),
                                          json.dumps(dict(zip(names, [c.name for c in cases])), indent=2) + '\n')
        return os.path.join(folder, 'imagesTs')

    # Commands.

    def _command(self, args: list[str], dataset: str, step: str) -> None:
        log = os.path.join(self.root, 'logs', f'{dataset}-{step}.log')
        with open(log, 'w') as f:
            f.write(' '.join(args) + '\n')
            f.flush()
            result = subprocess.run(args, env=self.env, stdout=f, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        if result.returncode != 0:
            raise ValueError(f'{args[0]} failed (exit code {result.returncode}) for {dataset}; its output is in {log}')

    def fit(self, run, cases: list, progress: Callable[[int], None]) -> tuple[int, str]:
        number, name = self.write_dataset(run, cases)
        self._command(['nnUNetv2_plan_and_preprocess', '-d', str(number), '-c', self.configuration,
                       '--verify_dataset_integrity'], name, 'plan')
        self._command(['nnUNetv2_train', str(number), self.configuration, 'all', '-tr', self.trainer,
                       '-device', self.device], name, 'train')
        progress(1)
        return number, name

    def predict(self, model: tuple[int, str], cases: list, tag: str) -> np.ndarray:
        """nnUNetv2_predict on the cases, read back as class indices [N, D, H, W]."""
        from volumes import volume_io
        number, name = model
        images = self._inputs(cases, tag)
        out = os.path.join(self.root, 'predictions', name, tag)
        self._command(['nnUNetv2_predict', '-i', images, '-o', out, '-d', str(number), '-c', self.configuration,
                       '-f', 'all', '-tr', self.trainer, '-device', self.device], name, f'predict-{tag}')
        predictions = []
        for i, case in enumerate(cases):
            path = os.path.join(out, f'{tag}{i:04d}.nii.gz')
            if not os.path.isfile(path):
                raise ValueError(f'nnUNetv2_predict wrote no {path} (the prediction of {case.name})')
            labels = volume_io.read_volume_array(path)
            if labels.shape != case.labels.shape or labels.min() < 0 or labels.max() >= len(self.labels):
                raise ValueError(f'{path} is not a label map of {len(self.labels)} labels on the grid of {case.name}')
            predictions.append(labels.astype(np.uint8))
        return np.stack(predictions)
