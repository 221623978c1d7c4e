/*
 * Fake libnvidia-sandboxutils.so.1 (drivers 560 and later ship the real one): the library
 * nvidia-ctk asks for the driver's files before falling back to its own search. This one loads
 * and declines, as the real library does on a host it cannot serve, so NVIDIA's tools take
 * their fallback path ("Failed to init nvsandboxutils ...; ignoring") instead of dying on a
 * missing symbol. Return values are nvSandboxUtilsRet_t (NVIDIA's nvsandboxutils.h).
 */
#define EXPORT __attribute__((visibility("default")))
#define NVSANDBOXUTILS_ERROR_UNINITIALIZED 1
#define NVSANDBOXUTILS_ERROR_NOT_SUPPORTED 2

EXPORT int nvSandboxUtilsInit(void *input) {
    (void)input;
    return NVSANDBOXUTILS_ERROR_NOT_SUPPORTED;
}

EXPORT int nvSandboxUtilsShutdown(void) { return NVSANDBOXUTILS_ERROR_UNINITIALIZED; }

EXPORT int nvSandboxUtilsGetDriverVersion(char *version, unsigned int length) {
    (void)version;
    (void)length;
    return NVSANDBOXUTILS_ERROR_UNINITIALIZED;
}

EXPORT int nvSandboxUtilsGetGpuResource(void *request) {
    (void)request;
    return NVSANDBOXUTILS_ERROR_UNINITIALIZED;
}

EXPORT int nvSandboxUtilsGetFileContent(char *path, char *content, unsigned int *size) {
    (void)path;
    (void)content;
    (void)size;
    return NVSANDBOXUTILS_ERROR_UNINITIALIZED;
}
