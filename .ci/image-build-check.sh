#!/usr/bin/env bash
# The container image's build, as close as this machine allows without a container
# engine: an empty directory gets exactly what the build stage's COPY lines copy from
# the build context (after .dockerignore), the stage's RUN command runs there, and
# every COPY of the runtime stage must find its source: in the context, or (--from)
# in what the build stage produced. Fails when the Dockerfile forgets a file the build
# needs, as it did when it copied only Cargo.toml, Cargo.lock and src/.
set -euo pipefail
cd "$(dirname "$0")/.."
fail() { echo "image-build-check: $*" >&2; exit 1; }

df=${DOCKERFILE:-Dockerfile}
# The checkout's target directory, so the dependencies are compiled once in CI; the
# crate itself is built again (its path differs), from the same sources.
built=${IMAGE_TARGET_DIR:-$PWD/target}
ctx=$(mktemp -d)
trap 'rm -rf "$ctx"' EXIT

# .dockerignore's patterns (plain paths here; anything fancier is refused so this
# script never silently copies more than docker would).
ignored=()
if [[ -f .dockerignore ]]; then
  while IFS= read -r line; do
    [[ -z $line || $line == \#* ]] && continue
    [[ $line =~ [*?\[!] ]] && fail ".dockerignore pattern '$line' is more than a plain path; teach this script first"
    ignored+=("${line%/}")
  done <.dockerignore
fi
is_ignored() { # path
  local p
  for p in "${ignored[@]}"; do [[ $1 == "$p" || $1 == "$p"/* ]] && return 0; done
  return 1
}

# Copies context path $1 to $2 as COPY does (a directory's contents into the target
# directory), leaving out what .dockerignore excludes.
copy_from_context() { # src dest
  local src=${1%/} dest=$2
  [[ -e $src ]] || fail "COPY $src: not in the build context"
  is_ignored "$src" && fail "COPY $src: excluded by .dockerignore"
  if [[ -d $src ]]; then
    mkdir -p "$dest"
    (cd "$src" && find . -type f) | while read -r f; do
      f=${f#./}
      is_ignored "$src/$f" && continue
      mkdir -p "$dest/$(dirname "$f")"
      cp -p "$src/$f" "$dest/$f"
    done
  else
    if [[ $dest == */ ]]; then mkdir -p "$dest"; dest=$dest$(basename "$src"); fi
    mkdir -p "$(dirname "$dest")"
    cp -p "$src" "$dest"
  fi
}

# stage N -> its lines (continuations joined)
stage() { awk -v want="$1" '/^FROM /{n++} n==want' "$df" | sed -e ':a' -e '/\\$/N; s/\\\n/ /; ta'; }

build=$(stage 1)
workdir=$(awk '$1 == "WORKDIR" { print $2 }' <<<"$build" | tail -1)
[[ -n $workdir ]] || fail "the build stage has no WORKDIR"
root=$ctx/stage$workdir
mkdir -p "$root"
copies=0
while read -r _ args; do
  read -ra parts <<<"$args"
  [[ ${parts[0]} == --* ]] && fail "build stage COPY with a flag (${parts[0]}): not emulated"
  dest=${parts[-1]}
  [[ $dest == /* ]] || dest=$root/$dest
  [[ $dest == */ || ${#parts[@]} -gt 2 ]] && dest=${dest%/}/
  for src in "${parts[@]:0:${#parts[@]}-1}"; do
    copy_from_context "$src" "$dest"
    copies=$((copies + 1))
  done
done < <(grep -E '^COPY ' <<<"$build")
((copies > 0)) || fail "the build stage copies nothing"
run=$(grep -E '^RUN ' <<<"$build" | sed 's/^RUN //')
[[ $run == *"--locked"* ]] || fail "the build stage's cargo build must use --locked: $run"
echo "image-build-check: build stage context: $(cd "$root" && find . -type f | wc -l) files; running: $run"
# The dependencies come from the registry as in any build.
(cd "$root" && CARGO_TARGET_DIR="$built" bash -c "$run") \
  || fail "the build stage's RUN failed in a context of only its COPY sources"

# The runtime stage: every source must exist where it is copied from.
runtime=$(stage 2)
while read -r _ args; do
  read -ra parts <<<"$args"
  if [[ ${parts[0]} == --from=* ]]; then
    src=${parts[1]}
    rel=${src#"$workdir"/}
    [[ $rel == target/* ]] && path=$built/${rel#target/} || path=$root/$rel
    [[ -e $path ]] || fail "COPY ${parts[*]}: the build stage produced no $src"
  else
    for src in "${parts[@]:0:${#parts[@]}-1}"; do
      [[ -e $src ]] || fail "COPY $src: not in the build context"
      is_ignored "$src" && fail "COPY $src: excluded by .dockerignore"
    done
  fi
done < <(grep -E '^COPY ' <<<"$runtime")
echo "image-build-check: the build stage builds from its COPY lines alone, and the runtime stage finds every file it copies"
