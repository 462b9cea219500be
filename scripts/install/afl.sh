#!/usr/bin/env bash
# cargo-afl (AFL++ for Rust, on the stable toolchain) for `scripts/fuzz`. Idempotent: the
# crate is installed once, and the AFL++ runtime it builds is built once per rustc.
set -euo pipefail

version=0.18.2
if ! cargo afl --version 2>/dev/null | grep -q "$version"; then
    cargo install cargo-afl --version "$version" --locked
fi
# `config --build` builds AFL++ (vendored in the crate) with make and cc for the current
# rustc; it refuses when that is done already.
if ! out=$(cargo afl config --build 2>&1); then
    if ! grep -q "already built" <<<"$out"; then
        printf '%s\n' "$out" >&2
        exit 1
    fi
fi
