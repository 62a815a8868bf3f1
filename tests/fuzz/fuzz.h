/* fuzz.h - the libFuzzer entry point every tests/fuzz/fuzz-*.c defines.
 *
 * Each target is linked two ways: with clang's -fsanitize=fuzzer (XA_FUZZ,
 * docs/testing.md) for real fuzzing, and with replay.c's main() for the
 * ctest "fuzz/<target>-replay" tests, which feed it every committed
 * corpus file so any compiler can run them [OVS fuzz-regression]. */
#ifndef XA_FUZZ_H
#define XA_FUZZ_H

#include <stddef.h>
#include <stdint.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#endif
