#!/usr/bin/env bash
# The viewer test's tools, cached in this folder (both gitignored):
#   node_modules/      puppeteer-core from package-lock.json (npm ci), redone when the lock changes
#   .ohif/<version>/   OHIF's built viewer, the dist/ folder of the npm package @ohif/app, fetched
#                      with npm pack and checked against the sha512 pinned below before unpacking
# Idempotent: a second run with nothing changed does nothing (no network).
set -euo pipefail
cd "$(dirname "$0")"

OHIF_VERSION=3.13.2
OHIF_INTEGRITY=sha512-WZdxmpmG7rqFgW9ZJLcbgr3XCtLi1KDNPoMaeY5PPe6j4G4fjEjjkycZM6C6Zk2F87BKxFfpq+jd5xXZB9E8EA==

sha512() {  # the Subresource Integrity string (as npm writes it) of a file
  node -e 'const fs = require("fs"), crypto = require("crypto");
    process.stdout.write("sha512-" + crypto.createHash("sha512")
      .update(fs.readFileSync(process.argv[1])).digest("base64"));' "$1"
}

lock_sum=$(sha512 package-lock.json)
if [ "$(cat node_modules/.cdss-lock 2>/dev/null)" != "$lock_sum" ]; then
  # puppeteer-core downloads no browser; the test drives the system's Chromium.
  npm ci --ignore-scripts --no-audit --no-fund --loglevel=error
  echo "$lock_sum" > node_modules/.cdss-lock
fi

ohif=.ohif/$OHIF_VERSION
if [ "$(cat "$ohif/.integrity" 2>/dev/null)" != "$OHIF_INTEGRITY" ]; then
  rm -rf "$ohif" .ohif/download && mkdir -p .ohif/download
  (cd .ohif/download && npm pack "@ohif/app@$OHIF_VERSION" --silent >/dev/null)
  tarball=.ohif/download/ohif-app-$OHIF_VERSION.tgz
  actual=$(sha512 "$tarball")
  if [ "$actual" != "$OHIF_INTEGRITY" ]; then
    echo "@ohif/app@$OHIF_VERSION: integrity $actual, pinned $OHIF_INTEGRITY" >&2
    exit 1
  fi
  rm -rf "$ohif.partial" && mkdir -p "$ohif.partial"
  tar -xzf "$tarball" -C "$ohif.partial" --strip-components=1 package/dist
  echo "$OHIF_INTEGRITY" > "$ohif.partial/.integrity"
  mv "$ohif.partial" "$ohif"
  rm -rf .ohif/download
fi
