#!/usr/bin/env bash
# Installs what is needed, then checks everything (docs/testing.md):
#
#   1. gcc build with -Werror into build/
#   2. clang build with ASan+UBSan into build-asan/, whose unit and e2e
#      tests run there (the e2e tests start build-asan's own xapid, so a
#      leak at its exit fails the test) -- all but the real-hypervisor
#      ones (labels xen, kvm): their guests boot under emulation for
#      minutes, and step 5 runs them              skipped with XA_QUICK=1
#   3. cppcheck over the hand-written C               (the "cppcheck" target)
#   4. clang-format --dry-run --Werror over the hand-written .c and .h
#   5. the whole ctest suite in build/
#
# Extra arguments go to both ctest runs, e.g. "-L unit" or "-R xmlrpc".
# Every step runs even when an earlier one failed; the exit status is
# non-zero if any failed, and the last line counts passed and failed
# tests over both ctest runs, each static check counting as one test.
set -uo pipefail
cd "$(dirname "$0")/.."

# A failure here is not fatal: what is missing makes a build step fail
# below, with a clearer message.
bash scripts/deps.sh || echo "test.sh: deps.sh failed; trying anyway" >&2

JOBS=$(nproc)
LOGDIR=$(mktemp -d)
trap 'rm -rf "$LOGDIR"' EXIT
LAUNCHER=()
if command -v ccache >/dev/null; then
  LAUNCHER=(-DCMAKE_C_COMPILER_LAUNCHER=ccache)
fi

PASSED=0
FAILED=0
SUMMARY=()

# note NAME STATUS DETAIL SECONDS: one line of the summary.
note() {
  SUMMARY+=("$(printf '%-32s %-7s %5d s  %s' "$1" "$2" "$4" "$3")")
}

# check NAME CMD...: runs a step that counts as one test.
check() {
  local name=$1 t0=$SECONDS
  shift
  echo "==== $name"
  if "$@"; then
    PASSED=$((PASSED + 1))
    note "$name" ok "" $((SECONDS - t0))
    return 0
  fi
  FAILED=$((FAILED + 1))
  note "$name" FAILED "" $((SECONDS - t0))
  return 1
}

# run_ctest NAME BUILD_DIR CTEST_ARGS...: counts ctest's own results.
run_ctest() {
  local name=$1 dir=$2 t0=$SECONDS log="$LOGDIR/ctest.log" rc line
  shift 2
  echo "==== $name"
  (cd "$dir" && ctest --output-on-failure -j"$JOBS" "$@") 2>&1 | tee "$log"
  rc=${PIPESTATUS[0]}
  # "97% tests passed, 1 tests failed out of 40" ("No tests were found"
  # when a label selects nothing)
  line=$(grep -E '[0-9]+ tests failed out of [0-9]+' "$log" | tail -n 1)
  if [[ $line =~ ([0-9]+)\ tests\ failed\ out\ of\ ([0-9]+) ]]; then
    local f=${BASH_REMATCH[1]} n=${BASH_REMATCH[2]}
    PASSED=$((PASSED + n - f))
    FAILED=$((FAILED + f))
    note "$name" "$([ "$rc" = 0 ] && echo ok || echo FAILED)" \
      "$((n - f)) passed, $f failed" $((SECONDS - t0))
  elif [ "$rc" = 0 ]; then
    note "$name" ok "no tests selected" $((SECONDS - t0))
  else
    FAILED=$((FAILED + 1))
    note "$name" FAILED "ctest did not run (rc=$rc)" $((SECONDS - t0))
  fi
}

# The hand-written C: everything but the build trees and generated code.
hand_written_c() {
  find server hypervisor storage network xe-cli clients tests \
    \( -name '*.c' -o -name '*.h' \) -type f 2>/dev/null | sort
}

# 1. the gcc build (the one the whole suite runs in, at the end)
check "build (gcc, -Werror)" env BUILD_DIR=build bash scripts/build.sh \
  -DCMAKE_C_COMPILER=gcc -DXA_WERROR=ON -DXA_SANITIZE= "${LAUNCHER[@]}"
main_built=$?

# 2. the sanitizer build and its unit and e2e tests
if [ "${XA_QUICK:-0}" = 1 ]; then
  note "asan build and tests" skipped "XA_QUICK=1" 0
elif check "build-asan (clang, ASan+UBSan)" env BUILD_DIR=build-asan \
  bash scripts/build.sh -DCMAKE_C_COMPILER=clang -DXA_WERROR=ON \
  -DXA_SANITIZE=address,undefined "${LAUNCHER[@]}"; then
  ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 \
    UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1 \
    run_ctest "ctest build-asan (unit, e2e)" build-asan \
    -L '^(unit|e2e)$' -LE '^(xen|kvm)$' "$@"
fi

# 3. cppcheck (configured by the gcc build's cmake run)
if [ "$main_built" = 0 ] || [ -f build/Makefile ]; then
  check "cppcheck" cmake --build build --target cppcheck
else
  check "cppcheck" false
fi

# 4. formatting
check_format() {
  local f n bad=0
  while read -r f; do
    n=$(clang-format --dry-run "$f" 2>&1 | grep -c 'warning: code should be')
    if [ "$n" != 0 ]; then
      echo "$f: $n places differ from clang-format (fix: clang-format -i $f)"
      bad=1
    fi
  done < <(hand_written_c)
  return $bad
}
check "clang-format" check_format

# 5. the whole suite, gcc build
if [ "$main_built" = 0 ]; then
  run_ctest "ctest build (all)" build "$@"
else
  FAILED=$((FAILED + 1))
  note "ctest build (all)" FAILED "not run: the build failed" 0
fi

echo
echo "==== summary"
printf '%s\n' "${SUMMARY[@]}"
echo "$PASSED passed, $FAILED failed"
[ "$FAILED" = 0 ]
