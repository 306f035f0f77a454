#!/usr/bin/python3
"""The fields `make probe` needs from an image definition: suite, mirror
and keyring, printed as shell assignments for `eval`.

Usage: definition-fields.py DEFINITION [NIB]

`make image` probes the image's archive before anything is compiled, so
that a machine which cannot reach it is told so within seconds, not after
the minutes a fresh clone takes to compile nib. Where NIB (the Makefile's
target/release/nib) exists and is newer than every source it is built
from, the fields come from `NIB plan --json DEFINITION`: the builder reads
and validates the definition as the build will, and an invalid one fails
here with nib's message and exit code (2). Otherwise they come from
Python's own TOML parser (tomllib, Python 3.11: Debian 12's python3), which
reads the same top-level keys. A last line `reader=nib` or `reader=tomllib`
says which it was.
"""

import json
import os
import shlex
import subprocess
import sys
import tempfile

FIELDS = ("suite", "mirror", "keyring")
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# What cargo builds target/release/nib from (relative to ROOT).
SOURCES = (
    "Cargo.toml",
    "Cargo.lock",
    "builder/Cargo.toml",
    "builder/src",
    "firstboot/Cargo.toml",
    "firstboot/src",
    "firstboot/host/Cargo.toml",
    "firstboot/host/src",
    "firstboot/templates",
)


def fail(msg, code=2):
    print(f"make image: {msg}", file=sys.stderr)
    sys.exit(code)


def is_current(nib):
    """NIB exists and no source is newer (cargo would rebuild it)."""
    try:
        built = os.stat(nib).st_mtime_ns
    except OSError:
        return False
    for src in SOURCES:
        path = os.path.join(ROOT, src)
        if os.path.isfile(path):
            paths = [path]
        else:
            paths = [os.path.join(d, f) for d, _, fs in os.walk(path) for f in fs]
        for p in paths:
            if os.stat(p).st_mtime_ns > built:
                return False
    return True


def from_nib(nib, definition):
    # An empty cache: the fields need no package index, and loading one
    # would only cost time.
    with tempfile.TemporaryDirectory(prefix="nib-probe-") as t:
        env = dict(os.environ, NIB_CACHE=os.path.join(t, "none"))
        p = subprocess.run(
            [nib, "plan", definition, "--json"],
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            env=env,
        )
    if p.returncode != 0:
        sys.stderr.write(p.stderr)
        sys.exit(p.returncode)
    plan = json.loads(p.stdout)
    return {k: plan[k] for k in FIELDS}


def from_toml(definition):
    try:
        import tomllib
    except ImportError:
        fail("reading the image definition needs Python 3.11 or later (tomllib), "
             "or a built nib (cargo build --release -p nib)", 1)
    try:
        with open(definition, "rb") as f:
            d = tomllib.load(f)
    except (OSError, tomllib.TOMLDecodeError) as e:
        fail(f"{definition}: {e}")
    fields = {}
    for k in FIELDS:
        if not isinstance(d.get(k), str):
            fail(f"{definition}: key `{k}`: missing or not a string")
        fields[k] = d[k]
    return fields


def main():
    if len(sys.argv) not in (2, 3):
        fail("usage: definition-fields.py DEFINITION [NIB]", 64)
    definition = sys.argv[1]
    nib = sys.argv[2] if len(sys.argv) == 3 else None
    if nib and is_current(nib):
        fields, reader = from_nib(nib, definition), "nib"
    else:
        fields, reader = from_toml(definition), "tomllib"
    for k in FIELDS:
        print(f"{k}={shlex.quote(str(fields[k]))}")
    print(f"reader={reader}")


if __name__ == "__main__":
    main()
