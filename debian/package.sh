#!/usr/bin/env bash
# Builds the Debian package: the release binary, then the manual pages and shell
# completions it generates from its own definitions (zonefwd manual, zonefwd
# completions), then cargo-deb around them. Prints the .deb's path last.
#
#   bash debian/package.sh          # cargo install cargo-deb first
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --locked --quiet
bin=target/release/zonefwd
assets=target/assets
rm -rf "$assets"
mkdir -p "$assets/man/man8" "$assets/man/man5" "$assets/completions"
"$bin" manual "$assets/man/pages" >/dev/null
mv "$assets"/man/pages/*.8 "$assets/man/man8/"
mv "$assets"/man/pages/*.5 "$assets/man/man5/"
rmdir "$assets/man/pages"
# Debian keeps manual pages compressed (gzip -9n: no name or time stamp inside).
gzip -9n "$assets"/man/man8/* "$assets"/man/man5/*
"$bin" completions bash >"$assets/completions/zonefwd"
"$bin" completions zsh >"$assets/completions/_zonefwd"
"$bin" completions fish >"$assets/completions/zonefwd.fish"
cargo deb --locked --no-build --quiet 2>&1 | tail -1
