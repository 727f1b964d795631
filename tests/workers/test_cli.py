"""`corral worker` refuses option combinations it cannot honour before it connects to anything."""

from __future__ import annotations

import click
import pytest
from click.testing import CliRunner

from scheduler.cli import main
from workers.cli import parse_size


def test_fp16_needs_a_cuda_device_and_a_gpu_backend() -> None:
    for args in (["--precision", "fp16"], ["--device", "cuda:0", "--backend", "numpy", "--precision", "fp16"]):
        result = CliRunner().invoke(main, ["worker", *args, "--redis-url", "redis://127.0.0.1:1/0"])
        assert result.exit_code == 2, result.output
        assert "--precision fp16 needs a CUDA device with the torch or onnxruntime backend" in result.output


def test_sizes_are_parsed_with_units() -> None:
    assert parse_size("2GiB") == 2 * 1024**3 and parse_size("512M") == 512 * 1024**2 and parse_size("1000") == 1000


def test_parse_size() -> None:
    assert parse_size("2GiB") == 2 * 1024**3 and parse_size("512M") == 512 * 1024**2
    assert parse_size("1.5gb") == 1_500_000_000 and parse_size("1000") == 1000
    with pytest.raises(click.BadParameter):
        parse_size("lots")
