#!/usr/bin/env bash
# make test: every phase runs even when one before it failed, each logged
# to target/test-logs/, then one summary line (tests/e2e/src/summary.rs):
# passed, failed, skipped — the skipped named with the target that runs
# them. Fails when anything failed or a test this run is meant to run was
# skipped.
#
#   lint     cargo fmt --check, clippy -D warnings, the release build
#   cargo    cargo test --workspace: unit, golden, validator, CLI tests
#   root     the #[ignore]d tests that need root or a real disk: the bookworm
#            image build (fills the layer cache), ocf:nib:mariadb against
#            mariadbd, nib flash refusing the disk that holds /
#   e2e      make e2e: the two-node pair booted from the built image, then
#            the simulated BMC and the fault scenarios (issue 17)
set -uo pipefail
cd "$(dirname "$0")/.." || exit 2
logs=target/test-logs
rm -rf "$logs"
mkdir -p "$logs"
phases=()

phase() {
    local name=$1
    shift
    echo "== make test: $name: $*"
    local start=$SECONDS
    "$@" 2>&1 | tee -a "$logs/$name.log"
    local rc=${PIPESTATUS[0]}
    echo "== make test: $name: exit $rc after $((SECONDS - start)) s"
    return "$rc"
}

record() { # NAME RC
    phases+=("$1=$2=$logs/$1.log")
}

# the release binaries: the image build (root phase) installs nib-firstboot
lint() {
    cargo fmt --all -- --check && cargo clippy --all-targets --locked -- -D warnings &&
        cargo build --release --locked -p nib -p nib-firstboot
}
phase lint lint; record lint $?

phase cargo cargo test --workspace --locked --no-fail-fast; record cargo $?

root() {
    local rc=0
    cargo test --locked -p nib --test image_build -- --ignored || rc=1
    cargo test --locked -p nib --lib flash::tests::live_root_disk_is_refused -- --ignored || rc=1
    cargo test --locked -p nib-firstboot --test ocf_agent -- --ignored || rc=1
    return "$rc"
}
phase root root; record root $?

phase e2e "${MAKE:-make}" --no-print-directory e2e; record e2e $?

cargo run --quiet --locked -p nib-e2e --bin test-summary -- \
    --title "make test" --runs "make test,make e2e" "${phases[@]}"
