# SPDX-License-Identifier: Apache-2.0
"""What several test modules share, in one place: running the tools (cli), test volumes and packed zips (volumes),
tiny generators and their snapshots (networks), metric test doubles (detectors), short training runs (training)
and the nvcc check of the CUDA sources (nvcc_build). Test modules import from here, never from each other."""
