#!/usr/bin/env python
"""The seed project's command line, kept working:

    python scripts/train_td3.py --scenario 0 --max-timesteps 1000 --debug --device cpu

Same as ``av-td3 train ...`` (every flag of ``av-td3 train`` is accepted).
"""

import sys
from pathlib import Path

try:
    from av_td3.cli import main
except ImportError:  # running from a checkout without `pip install -e .`
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
    from av_td3.cli import main

if __name__ == "__main__":
    sys.exit(main(["train", *sys.argv[1:]]))
