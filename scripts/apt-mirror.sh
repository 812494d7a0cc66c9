#!/usr/bin/env bash
# Prints the Debian mirror that apt already uses on this machine (one-line and
# deb822 source formats), for the archive proper rather than security or
# backports. Used by airgap-images.sh and compose-v2.sh, so that no mirror
# address is written into the repository.
set -euo pipefail
exec python3 - <<'PY'
import glob, re, sys

def entries():
    for path in ["/etc/apt/sources.list"] + sorted(glob.glob("/etc/apt/sources.list.d/*.list")):
        try:
            lines = open(path).read().splitlines()
        except OSError:
            continue
        for line in lines:
            line = line.split("#", 1)[0].strip()
            m = re.match(r"deb\s+(\[[^\]]*\]\s+)?(\S+)\s+(\S+)", line)
            if m:
                yield m.group(2), [m.group(3)]
    for path in sorted(glob.glob("/etc/apt/sources.list.d/*.sources")):
        for para in re.split(r"\n\s*\n", open(path).read()):
            fields = {}
            for line in para.splitlines():
                if line.startswith("#") or ":" not in line:
                    continue
                k, v = line.split(":", 1)
                fields[k.strip().lower()] = v.strip()
            if fields.get("enabled", "yes").lower() == "no":
                continue
            if "deb" not in fields.get("types", "").split():
                continue
            for uri in fields.get("uris", "").split():
                yield uri, fields.get("suites", "").split()

# The archive proper: a plain release suite (bookworm, not bookworm-security).
for uri, suites in entries():
    if "security" not in uri and any("-" not in s and "/" not in s for s in suites):
        print(uri)
        sys.exit(0)
sys.exit("no Debian mirror found in /etc/apt/sources*")
PY
