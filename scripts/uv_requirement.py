"""Print the pip requirement line, with every hash, for the uv that uv.lock pins.

`make` installs uv with `pip --require-hashes` from this line, then everything else with uv from
uv.lock: the lock is the one place any version or hash is written, uv's own included.
"""

from __future__ import annotations

import sys
import tomllib
from pathlib import Path

lock = tomllib.loads((Path(__file__).resolve().parent.parent / "uv.lock").read_text())
uv = next((p for p in lock["package"] if p["name"] == "uv"), None)
if uv is None:
    sys.exit("uv.lock pins no uv: add it to the test extra in pyproject.toml and run `make lock`")
hashes = [w["hash"] for w in uv.get("wheels", [])] + ([uv["sdist"]["hash"]] if "sdist" in uv else [])
print(f"uv=={uv['version']} " + " ".join(f"--hash={h}" for h in hashes))
