#!/usr/bin/env bash
# Says whether p4src/p4c-out/bmv2/ (real p4c output, committed) was compiled from the current
# p4src/dvipa.p4. Prints a warning when it was not; always exits 0 (p4c is not available on every
# machine, so a stale output is something to report, not a test failure).
set -u
cd "$(dirname "$0")/.."
stamp=p4src/p4c-out/bmv2/dvipa.p4.sha256
if [ ! -f "$stamp" ]; then
  echo "WARNING: $stamp is missing: p4src/p4c-out/bmv2/ has no record of the source it was compiled from." >&2
  exit 0
fi
want=$(tr -d ' \n' < "$stamp")
now=$(sha256sum p4src/dvipa.p4 | cut -d' ' -f1)
if [ "$want" != "$now" ]; then
  cat >&2 <<MSG
WARNING: p4src/dvipa.p4 changed since p4src/p4c-out/bmv2/ was compiled.
  compiled from sha256 $want
  current       sha256 $now
  dvipa.json and dvipa.p4info.txtpb are stale for bmv2 until 'make -C p4src' runs on a machine with
  p4c; the embedded switch does not use the JSON. Say so in the closing note of the change.
MSG
else
  echo "p4src/p4c-out/bmv2 matches p4src/dvipa.p4 (sha256 ${now:0:12}...)"
fi
exit 0
