/*
 * tests/cycles_probe.c — kp_init / kp_shutdown cycles in a process of its own, linked
 * to libkport.so as an application is (the test suite itself links the OpenCL ICD
 * loader, which would stay loaded and hide what a reload costs). Prints the heap in
 * use after `warm` cycles and after each of `batches` batches of `n` more, and whether
 * the opencl backend was available in every cycle:
 *     kport-cycles-probe WARM N BATCHES  ->  "opencl 1 heap A B C ..."
 */
#include <kport.h>

#include <malloc.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#ifdef __SANITIZE_ADDRESS__
/* ASan's allocator statistics (sanitizer/allocator_interface.h, which gcc does not
 * install everywhere): ASan replaces malloc, so mallinfo2 would read 0. */
size_t __sanitizer_get_current_allocated_bytes(void);
#endif

static size_t heap_in_use(void) {
#ifdef __SANITIZE_ADDRESS__
    return __sanitizer_get_current_allocated_bytes();
#else
    return mallinfo2().uordblks;
#endif
}

/* 1 when every cycle initialised with the opencl backend available. */
static int cycles(int n) {
    int all = 1;
    for (int i = 0; i < n; i++) {
        if (kp_init(NULL) != KP_OK) {
            fprintf(stderr, "kp_init: %s\n", kp_last_error());
            exit(1);
        }
        int opencl = 0;
        for (int b = 0; b < kp_backend_count(); b++) {
            kp_backend_info info;
            opencl |= kp_backend_info_get(b, &info) == KP_OK && strcmp(info.name, "opencl") == 0 && info.available;
        }
        all &= opencl;
        if (kp_shutdown() != KP_OK) exit(1);
    }
    return all;
}

int main(int argc, char **argv) {
    int warm = argc > 3 ? atoi(argv[1]) : 4, n = argc > 3 ? atoi(argv[2]) : 20, batches = argc > 3 ? atoi(argv[3]) : 2;
    if (batches < 1 || batches > 16) return 2;
    size_t heap[17];
    int ok = cycles(warm);
    heap[0] = heap_in_use();
    for (int i = 1; i <= batches; i++) {
        ok &= cycles(n);
        heap[i] = heap_in_use();
    }
    printf("opencl %d heap", ok);
    for (int i = 0; i <= batches; i++) printf(" %zu", heap[i]);
    printf("\n");
    return 0;
}
