#!/usr/bin/env python3
"""Print a hash of pyproject.toml's dependency ranges (dependencies, extras, requires-python).

requirements.lock records it when it is made, so scripts/setup.sh can say in one line that the lock
is stale after someone changed a range, without a change to the linter settings counting as one.
"""

import hashlib
import json
import sys
import tomllib

with open(sys.argv[1] if len(sys.argv) > 1 else "pyproject.toml", "rb") as f:
    project = tomllib.load(f)["project"]
spec = {
    "requires-python": project.get("requires-python", ""),
    "dependencies": sorted(project.get("dependencies", [])),
    "optional-dependencies": {k: sorted(v) for k, v in project.get("optional-dependencies", {}).items()},
}
print(hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest())
