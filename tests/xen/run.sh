#!/usr/bin/env bash
# run.sh BUILD_DIR OUT - boots Xen 4.17 under QEMU (TCG) with the test
# dom0 (build-dom0.sh) and waits for it to power off; the serial console
# goes to OUT/boot.log, where the XENTEST lines are.
#
# TCG with -cpu qemu64, as in /work/shared/recipes/xen-in-qemu: this
# machine's /dev/kvm (kvm-pvm) boots no stock kernel, and qemu64 has no
# VMX, so the nested Xen runs PV guests only.  Exit status: QEMU's, 124
# on timeout (XEN_TEST_TIMEOUT seconds, default 540), 77 when something
# needed is not installed.  XEN_TEST_DOM0_ARGS goes on dom0's command
# line (e.g. xentest.only=devices: see xentest.sh).
set -euo pipefail
BUILD=$1
OUT=$2
HERE=$(dirname "$(readlink -f "$0")")
"$HERE/build-dom0.sh" "$BUILD" "$OUT"
set +e
timeout "${XEN_TEST_TIMEOUT:-540}" qemu-system-x86_64 \
    -accel tcg,thread=multi -cpu qemu64 -smp 2 -m 1536 \
    -nographic -nodefaults -serial stdio -no-reboot \
    -kernel "$OUT/xen" -append "console=com1 dom0_mem=768M,max:768M" \
    -initrd "$OUT/vmlinuz console=hvc0 quiet ${XEN_TEST_DOM0_ARGS:-},$OUT/dom0.gz" \
    </dev/null >"$OUT/boot.log" 2>&1
rc=$?
set -e
grep -a '^XENTEST' "$OUT/boot.log" | tr -d '\r' || true
exit $rc
