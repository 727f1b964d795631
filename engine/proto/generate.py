"""Regenerate ``corral_model_pb2.py`` from ``corral_model.proto``.

Run ``python -m engine.proto.generate`` after editing the schema; the
generated module is committed so that installing corral needs no compiler.
"""

from __future__ import annotations

import sys
from pathlib import Path


def main() -> int:
    from grpc_tools import protoc  # dev-only dependency

    here = Path(__file__).resolve().parent
    args = ["protoc", f"-I{here}", f"--python_out={here}", f"--pyi_out={here}", str(here / "corral_model.proto")]
    return protoc.main(args)


if __name__ == "__main__":
    sys.exit(main())
