/*
 * A PKCS#11 module that stands for a slow HSM in the benchmark (scripts/bench.sh, BENCH_HSM):
 * it forwards every call to the module named by PKCS11_DELAY_MODULE (SoftHSM) and sleeps
 * PKCS11_DELAY_US microseconds before each signature it returns, as a network HSM or a
 * cloud KMS adds milliseconds of latency. Not part of the server.
 *
 *   gcc -shared -fPIC -I/usr/include/p11-kit-1 -o pkcs11_delay.so pkcs11_delay.c -ldl
 */
#include <dlfcn.h>
#include <stdlib.h>
#include <time.h>
#include <p11-kit/pkcs11.h>

static CK_FUNCTION_LIST delayed;
static CK_FUNCTION_LIST_PTR real;
static long delay_us;

static CK_RV delayed_sign(CK_SESSION_HANDLE session, CK_BYTE_PTR data, CK_ULONG data_len,
                          CK_BYTE_PTR signature, CK_ULONG_PTR signature_len) {
    /* A call without a buffer only asks for the signature's length. */
    if (signature != NULL && delay_us > 0) {
        struct timespec pause = {delay_us / 1000000, (delay_us % 1000000) * 1000};
        nanosleep(&pause, NULL);
    }
    return real->C_Sign(session, data, data_len, signature, signature_len);
}

CK_RV C_GetFunctionList(CK_FUNCTION_LIST_PTR_PTR list) {
    if (real == NULL) {
        const char *path = getenv("PKCS11_DELAY_MODULE");
        void *module = path ? dlopen(path, RTLD_NOW | RTLD_LOCAL) : NULL;
        CK_C_GetFunctionList get = module ? (CK_C_GetFunctionList)dlsym(module, "C_GetFunctionList") : NULL;
        if (get == NULL || get(&real) != CKR_OK) return CKR_GENERAL_ERROR;
        const char *us = getenv("PKCS11_DELAY_US");
        delay_us = us ? atol(us) : 0;
        delayed = *real;
        delayed.C_Sign = delayed_sign;
    }
    *list = &delayed;
    return CKR_OK;
}
