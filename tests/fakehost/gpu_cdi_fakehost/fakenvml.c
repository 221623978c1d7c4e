/*
 * Fake NVML: a libnvidia-ml.so.1 that serves a topology read from a file instead of talking to
 * a kernel driver, so the real pynvml can be exercised on machines without a GPU.
 *
 * Compiled against the real nvml.h (from the nvidia-nvml-dev wheel) so every struct it fills has
 * the driver's layout. The topology file is named by $FAKE_NVML_TOPOLOGY and is written by the
 * Python side (gpu_cdi_fakehost.nvmlfile); its line format is documented in
 * specs/topology-format.md ("Fake NVML file"). Each line is a record type followed by
 * tab-separated key=value fields.
 *
 * Events (XIDs, ECC errors, a GPU falling off the bus, a failing wait) come from an append-only
 * file that tests write while processes hold the library ("Events" in the same document).
 *
 * Entry points not defined here are simply absent, so callers get NVML_ERROR_FUNCTION_NOT_FOUND
 * from pynvml exactly as with an older driver that lacks them.
 */
#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/inotify.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

/* Export the legacy unversioned entry points too, instead of the header renaming them. */
#define NVML_NO_UNVERSIONED_FUNC_DEFS
#include <nvml.h>

#define EXPORT __attribute__((visibility("default")))
#define MAX_FIELD 256
#define FAKE_MAGIC 0x46414b45u /* "FAKE": lets us reject handles that are not ours */

enum handle_kind { KIND_GPU = 1, KIND_MIG = 2 };

typedef struct fake_gi_profile {
    unsigned int index; /* NVML_GPU_INSTANCE_PROFILE_* */
    unsigned int id, p2p, slices, instances, sms, ce, dec, enc, jpeg, ofa, caps;
    unsigned long long mem_mb;
    char name[NVML_DEVICE_NAME_V2_BUFFER_SIZE];
} fake_gi_profile;

typedef struct fake_gi {
    unsigned int magic;
    int gpu;
    unsigned int id, profile_id, start, size;
} fake_gi;

/* An active NVLink of a GPU and the PCI device at its far end. */
typedef struct fake_link {
    int active;
    unsigned int remote_type; /* nvmlIntNvLinkDeviceType_t */
    unsigned int domain, bus, dev, pci_device_id, pci_subsystem_id;
} fake_link;

/* How two GPUs are connected: PCIe distance and P2P status per NVML_P2P_CAPS_INDEX_*. */
#define P2P_CAPS 5
typedef struct fake_pair {
    int known;
    unsigned int ancestor; /* nvmlGpuTopologyLevel_t */
    unsigned int p2p[P2P_CAPS];
} fake_pair;

/* Both full GPUs and MIG devices are "devices"; an nvmlDevice_t points at one of these. */
typedef struct fake_device {
    unsigned int magic;
    int kind;
    int gpu;       /* index of the GPU (the parent, for a MIG device) */
    int mig_index; /* MIG handle index on the parent, -1 for a full GPU */
    char name[NVML_DEVICE_NAME_V2_BUFFER_SIZE];
    char uuid[NVML_DEVICE_UUID_V2_BUFFER_SIZE];
    unsigned int minor;
    unsigned int domain, bus, dev, pci_device_id, pci_subsystem_id;
    unsigned int arch;
    int cc_major, cc_minor;
    unsigned long long mem_total, mem_reserved, mem_used;
    int mig_supported, ecc;
    unsigned int mig_current, mig_pending, max_mig;
    unsigned int gi_id, ci_id; /* MIG devices only */
    unsigned int ci_slices, ci_start; /* MIG devices: the compute instance's compute slices */
    unsigned int ci_magic;            /* MIG devices: &ci_magic is the nvmlComputeInstance_t */
    unsigned int nvlinks, nvlink_version; /* links the board has; nvmlNvlinkVersion_t */
    fake_link links[NVML_NVLINK_MAX_LINKS];
    /* per-GPU data */
    int n_profiles;
    fake_gi_profile *profiles;
    int n_gis;
    fake_gi *gis;
    int n_migs;
    struct fake_device **migs;
} fake_device;

typedef struct fake_error {
    char call[MAX_FIELD];
    int gpu; /* -1: any */
    int mig; /* MIG handle index; -1: the GPU and all its MIG devices */
    nvmlReturn_t code;
    long remaining; /* < 0: forever */
} fake_error;

/* An event set reads the events file from its own offset; a GPU's events count from the offset
 * at which it was registered (NVML records nothing that happened before registration). */
typedef struct fake_event_set {
    unsigned int magic;
    long long offset;
    unsigned long long *mask; /* per GPU */
    long long *since;         /* per GPU */
    struct fake_event_set *next;
} fake_event_set;

/* Guards init/shutdown, the error-rule counters and the event state; device data is read-only
 * between init and shutdown. */
static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;

static struct {
    int loaded;
    int refcount;
    char driver[NVML_SYSTEM_DRIVER_VERSION_BUFFER_SIZE];
    char nvml[NVML_SYSTEM_NVML_VERSION_BUFFER_SIZE];
    int cuda;
    int n_gpus;
    fake_device **gpus;
    int n_errors;
    fake_error *errors;
    int n_paired;     /* GPUs in the pair table (sized at the first pair record) */
    fake_pair *pairs; /* n_paired x n_paired */
    /* events file: append-only, see specs/topology-format.md ("Events") */
    char events_path[4096];
    int events_fd; /* valid when events_open */
    int events_open;
    int events_unreadable; /* said so once */
    long long events_scanned; /* bytes scanned for lost/recovered lines */
    unsigned char *lost;      /* per GPU */
    fake_event_set *sets;
} T;

/* ---------------------------------------------------------------- diagnostics */

static void complain(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    fputs("fake-nvml: ", stderr);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
}

/* ---------------------------------------------------------------- topology parsing */

typedef struct record {
    int n;
    char *keys[64];
    char *vals[64];
} record;

static const char *get(const record *r, const char *key) {
    for (int i = 0; i < r->n; i++)
        if (strcmp(r->keys[i], key) == 0) return r->vals[i];
    return NULL;
}

static int need_str(const record *r, const char *key, const char **out, const char *where) {
    *out = get(r, key);
    if (!*out) {
        complain("%s: missing field '%s'", where, key);
        return -1;
    }
    return 0;
}

static int need_ull(const record *r, const char *key, unsigned long long *out, const char *where) {
    const char *s;
    char *end;
    if (need_str(r, key, &s, where)) return -1;
    errno = 0;
    *out = strtoull(s, &end, 0);
    if (errno || *end || end == s) {
        complain("%s: field '%s' is not an unsigned integer: '%s'", where, key, s);
        return -1;
    }
    return 0;
}

static int need_uint(const record *r, const char *key, unsigned int *out, const char *where) {
    unsigned long long v;
    if (need_ull(r, key, &v, where)) return -1;
    *out = (unsigned int)v;
    return 0;
}

static int need_int(const record *r, const char *key, int *out, const char *where) {
    const char *s;
    char *end;
    if (need_str(r, key, &s, where)) return -1;
    errno = 0;
    long v = strtol(s, &end, 0);
    if (errno || *end || end == s) {
        complain("%s: field '%s' is not an integer: '%s'", where, key, s);
        return -1;
    }
    *out = (int)v;
    return 0;
}

static void copy_str(char *dst, size_t size, const char *src) {
    snprintf(dst, size, "%s", src);
}

static fake_device *gpu_at(int index, const char *where) {
    if (index < 0 || index >= T.n_gpus || !T.gpus[index]) {
        complain("%s: no gpu with index %d defined before this line", where, index);
        return NULL;
    }
    return T.gpus[index];
}

static int fill_gpu(fake_device *d, const record *r, const char *where) {
    const char *s;
    if (need_str(r, "name", &s, where)) return -1;
    copy_str(d->name, sizeof d->name, s);
    if (need_str(r, "uuid", &s, where)) return -1;
    copy_str(d->uuid, sizeof d->uuid, s);
    if (need_uint(r, "minor", &d->minor, where) || need_uint(r, "domain", &d->domain, where) ||
        need_uint(r, "bus", &d->bus, where) || need_uint(r, "device", &d->dev, where) ||
        need_uint(r, "pci_device_id", &d->pci_device_id, where) ||
        need_uint(r, "pci_subsystem_id", &d->pci_subsystem_id, where) ||
        need_uint(r, "arch", &d->arch, where) || need_int(r, "cc_major", &d->cc_major, where) ||
        need_int(r, "cc_minor", &d->cc_minor, where) ||
        need_ull(r, "mem_total", &d->mem_total, where) ||
        need_ull(r, "mem_reserved", &d->mem_reserved, where) ||
        need_ull(r, "mem_used", &d->mem_used, where) ||
        need_int(r, "mig_supported", &d->mig_supported, where) ||
        need_int(r, "ecc", &d->ecc, where) ||
        need_uint(r, "mig_current", &d->mig_current, where) ||
        need_uint(r, "mig_pending", &d->mig_pending, where) ||
        need_uint(r, "max_mig", &d->max_mig, where) ||
        need_uint(r, "nvlinks", &d->nvlinks, where) ||
        need_uint(r, "nvlink_version", &d->nvlink_version, where))
        return -1;
    if (d->nvlinks > NVML_NVLINK_MAX_LINKS) {
        complain("%s: nvlinks %u is more than NVML's %d", where, d->nvlinks, NVML_NVLINK_MAX_LINKS);
        return -1;
    }
    return 0;
}

static int parse_gpu(const record *r, const char *where) {
    int index;
    if (need_int(r, "index", &index, where)) return -1;
    if (index != T.n_gpus) {
        complain("%s: gpu index %d out of order (expected %d)", where, index, T.n_gpus);
        return -1;
    }
    if (T.pairs) {
        complain("%s: gpu record after the first pair record", where);
        return -1;
    }
    fake_device *d = calloc(1, sizeof *d);
    fake_device **g = d ? realloc(T.gpus, sizeof *g * (size_t)(T.n_gpus + 1)) : NULL;
    if (g) T.gpus = g;
    if (!g || fill_gpu(d, r, where)) {
        free(d);
        return -1;
    }
    d->magic = FAKE_MAGIC;
    d->kind = KIND_GPU;
    d->gpu = index;
    d->mig_index = -1;
    T.gpus[T.n_gpus++] = d;
    return 0;
}

static int parse_profile(const record *r, const char *where) {
    int gpu;
    const char *s;
    fake_gi_profile p;
    memset(&p, 0, sizeof p);
    if (need_int(r, "gpu", &gpu, where)) return -1;
    fake_device *d = gpu_at(gpu, where);
    if (!d) return -1;
    if (need_uint(r, "profile", &p.index, where) || need_uint(r, "id", &p.id, where) ||
        need_uint(r, "p2p", &p.p2p, where) || need_uint(r, "slices", &p.slices, where) ||
        need_uint(r, "instances", &p.instances, where) || need_uint(r, "sms", &p.sms, where) ||
        need_uint(r, "ce", &p.ce, where) || need_uint(r, "dec", &p.dec, where) ||
        need_uint(r, "enc", &p.enc, where) || need_uint(r, "jpeg", &p.jpeg, where) ||
        need_uint(r, "ofa", &p.ofa, where) || need_uint(r, "caps", &p.caps, where) ||
        need_ull(r, "mem_mb", &p.mem_mb, where) || need_str(r, "name", &s, where))
        return -1;
    copy_str(p.name, sizeof p.name, s);
    fake_gi_profile *ps = realloc(d->profiles, sizeof *ps * (size_t)(d->n_profiles + 1));
    if (!ps) return -1;
    d->profiles = ps;
    d->profiles[d->n_profiles++] = p;
    return 0;
}

static int parse_gi(const record *r, const char *where) {
    int gpu;
    fake_gi gi;
    memset(&gi, 0, sizeof gi);
    if (need_int(r, "gpu", &gpu, where)) return -1;
    fake_device *d = gpu_at(gpu, where);
    if (!d) return -1;
    gi.magic = FAKE_MAGIC;
    gi.gpu = gpu;
    if (need_uint(r, "id", &gi.id, where) || need_uint(r, "profile_id", &gi.profile_id, where) ||
        need_uint(r, "start", &gi.start, where) || need_uint(r, "size", &gi.size, where))
        return -1;
    /* GI handles point into this array, so it is allocated once at its maximum (NVML allows
     * far fewer GPU instances per GPU) and never moved by realloc. */
    if (d->n_gis >= 64) {
        complain("%s: too many GPU instances on gpu %d", where, gpu);
        return -1;
    }
    if (!d->gis) d->gis = calloc(64, sizeof *d->gis);
    if (!d->gis) return -1;
    d->gis[d->n_gis++] = gi;
    return 0;
}

static int parse_mig(const record *r, const char *where) {
    int gpu;
    const char *name, *uuid;
    if (need_int(r, "gpu", &gpu, where)) return -1;
    fake_device *p = gpu_at(gpu, where);
    if (!p) return -1;
    /* A MIG device inherits everything it does not override (PCI, architecture, ...). */
    fake_device m = *p;
    m.kind = KIND_MIG;
    m.mig_index = p->n_migs;
    m.n_profiles = m.n_gis = m.n_migs = 0;
    m.profiles = NULL;
    m.gis = NULL;
    m.migs = NULL;
    if (need_str(r, "name", &name, where) || need_str(r, "uuid", &uuid, where) ||
        need_uint(r, "gi", &m.gi_id, where) || need_uint(r, "ci", &m.ci_id, where) ||
        need_uint(r, "ci_slices", &m.ci_slices, where) ||
        need_uint(r, "ci_start", &m.ci_start, where) ||
        need_ull(r, "mem_total", &m.mem_total, where) ||
        need_ull(r, "mem_reserved", &m.mem_reserved, where) ||
        need_ull(r, "mem_used", &m.mem_used, where))
        return -1;
    copy_str(m.name, sizeof m.name, name);
    copy_str(m.uuid, sizeof m.uuid, uuid);
    m.ci_magic = FAKE_MAGIC;
    fake_device **ms = realloc(p->migs, sizeof *ms * (size_t)(p->n_migs + 1));
    if (!ms) return -1;
    p->migs = ms;
    fake_device *heap = malloc(sizeof *heap);
    if (!heap) return -1;
    *heap = m;
    p->migs[p->n_migs++] = heap;
    return 0;
}

static int parse_nvlink(const record *r, const char *where) {
    int gpu;
    unsigned int link;
    if (need_int(r, "gpu", &gpu, where) || need_uint(r, "link", &link, where)) return -1;
    fake_device *d = gpu_at(gpu, where);
    if (!d) return -1;
    if (link >= d->nvlinks) {
        complain("%s: link %u, but gpu %d has %u NVLinks", where, link, gpu, d->nvlinks);
        return -1;
    }
    fake_link *l = &d->links[link];
    if (need_uint(r, "remote_type", &l->remote_type, where) ||
        need_uint(r, "domain", &l->domain, where) || need_uint(r, "bus", &l->bus, where) ||
        need_uint(r, "device", &l->dev, where) ||
        need_uint(r, "pci_device_id", &l->pci_device_id, where) ||
        need_uint(r, "pci_subsystem_id", &l->pci_subsystem_id, where))
        return -1;
    l->active = 1;
    return 0;
}

static int parse_pair(const record *r, const char *where) {
    static const char *caps[P2P_CAPS] = {"read", "write", "nvlink", "atomics", "pci"};
    int a, b;
    fake_pair p = {.known = 1};
    if (need_int(r, "gpu", &a, where) || need_int(r, "peer", &b, where) ||
        need_uint(r, "ancestor", &p.ancestor, where))
        return -1;
    for (int i = 0; i < P2P_CAPS; i++)
        if (need_uint(r, caps[i], &p.p2p[i], where)) return -1;
    if (!gpu_at(a, where) || !gpu_at(b, where)) return -1;
    if (a == b) {
        complain("%s: a GPU paired with itself", where);
        return -1;
    }
    if (!T.pairs) {
        T.pairs = calloc((size_t)T.n_gpus * (size_t)T.n_gpus, sizeof *T.pairs);
        if (!T.pairs) return -1;
        T.n_paired = T.n_gpus;
    }
    T.pairs[a * T.n_paired + b] = T.pairs[b * T.n_paired + a] = p;
    return 0;
}

static int parse_error(const record *r, const char *where) {
    const char *s;
    fake_error e;
    memset(&e, 0, sizeof e);
    if (need_str(r, "call", &s, where)) return -1;
    copy_str(e.call, sizeof e.call, s);
    if (need_int(r, "gpu", &e.gpu, where) || need_int(r, "mig", &e.mig, where)) return -1;
    int code, times;
    if (need_int(r, "code", &code, where) || need_int(r, "times", &times, where)) return -1;
    e.code = (nvmlReturn_t)code;
    e.remaining = times;
    fake_error *es = realloc(T.errors, sizeof *es * (size_t)(T.n_errors + 1));
    if (!es) return -1;
    T.errors = es;
    T.errors[T.n_errors++] = e;
    return 0;
}

static int split_record(char *line, record *r) {
    r->n = 0;
    char *save = NULL;
    char *tok = strtok_r(line, "\t", &save);
    /* the first token is the record type; store it under the key "" */
    if (!tok) return 0;
    r->keys[0] = "";
    r->vals[0] = tok;
    r->n = 1;
    while ((tok = strtok_r(NULL, "\t", &save))) {
        if (r->n >= 64) return -1;
        char *eq = strchr(tok, '=');
        if (!eq) return -1;
        *eq = '\0';
        r->keys[r->n] = tok;
        r->vals[r->n] = eq + 1;
        r->n++;
    }
    return 0;
}

static void free_sets(void);

static void free_topology(void) {
    free_sets();
    if (T.events_open) close(T.events_fd);
    free(T.lost);
    for (int i = 0; i < T.n_gpus; i++) {
        fake_device *d = T.gpus[i];
        if (!d) continue;
        for (int j = 0; j < d->n_migs; j++) {
            d->migs[j]->magic = 0;
            free(d->migs[j]);
        }
        free(d->migs);
        free(d->profiles);
        free(d->gis);
        d->magic = 0;
        free(d);
    }
    free(T.gpus);
    free(T.errors);
    free(T.pairs);
    memset(&T, 0, sizeof T);
}

/* A read descriptor for a regular file, or -1 with *why: a FIFO or a device named by an
 * environment variable must not block or flood nvmlInit. */
static int open_regular(const char *path, const char **why) {
    int fd = open(path, O_RDONLY | O_NONBLOCK | O_CLOEXEC);
    if (fd < 0) {
        *why = strerror(errno);
        return -1;
    }
    struct stat st;
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
        close(fd);
        *why = "not a regular file";
        errno = EINVAL;
        return -1;
    }
    /* regular files ignore O_NONBLOCK, but clear it for plain reads */
    fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) & ~O_NONBLOCK);
    return fd;
}

#define EVENTS_FILE "nvml-events.txt"

/* $FAKE_NVML_EVENTS, else nvml-events.txt beside the topology file. */
static void events_locate(const char *topology_path) {
    const char *env = getenv("FAKE_NVML_EVENTS");
    if (env && *env) {
        copy_str(T.events_path, sizeof T.events_path, env);
        return;
    }
    const char *slash = strrchr(topology_path, '/');
    int dir_len = slash ? (int)(slash - topology_path) + 1 : 0;
    snprintf(T.events_path, sizeof T.events_path, "%.*s%s", dir_len, topology_path, EVENTS_FILE);
}

static nvmlReturn_t load_topology(void) {
    const char *path = getenv("FAKE_NVML_TOPOLOGY");
    if (!path || !*path) {
        complain("FAKE_NVML_TOPOLOGY is not set; behaving like a host without the NVIDIA driver");
        return NVML_ERROR_DRIVER_NOT_LOADED;
    }
    const char *why = NULL;
    int fd = open_regular(path, &why);
    FILE *f = fd >= 0 ? fdopen(fd, "r") : NULL;
    if (!f) {
        complain("cannot open FAKE_NVML_TOPOLOGY file %s: %s", path, why ? why : strerror(errno));
        if (fd >= 0) close(fd);
        return NVML_ERROR_DRIVER_NOT_LOADED;
    }
    char *line = NULL;
    size_t cap = 0;
    ssize_t len;
    int lineno = 0, bad = 0, have_system = 0;
    char where[512];
    while (!bad && (len = getline(&line, &cap, f)) >= 0) {
        lineno++;
        while (len > 0 && (line[len - 1] == '\n' || line[len - 1] == '\r')) line[--len] = '\0';
        if (len == 0 || line[0] == '#') continue;
        snprintf(where, sizeof where, "%s:%d", path, lineno);
        record r = {0};
        if (split_record(line, &r) || r.n == 0) {
            complain("%s: malformed line (fields must be key=value separated by tabs)", where);
            bad = 1;
            break;
        }
        const char *type = r.vals[0];
        if (strcmp(type, "format") == 0) {
            const char *v = get(&r, "version");
            if (!v || strcmp(v, "1") != 0) {
                complain("%s: unsupported format version", where);
                bad = 1;
            }
        } else if (strcmp(type, "system") == 0) {
            const char *drv, *nv;
            if (need_str(&r, "driver", &drv, where) || need_str(&r, "nvml", &nv, where) ||
                need_int(&r, "cuda", &T.cuda, where)) {
                bad = 1;
            } else {
                copy_str(T.driver, sizeof T.driver, drv);
                copy_str(T.nvml, sizeof T.nvml, nv);
                have_system = 1;
            }
        } else if (strcmp(type, "gpu") == 0) {
            bad = parse_gpu(&r, where) != 0;
        } else if (strcmp(type, "giprofile") == 0) {
            bad = parse_profile(&r, where) != 0;
        } else if (strcmp(type, "gi") == 0) {
            bad = parse_gi(&r, where) != 0;
        } else if (strcmp(type, "mig") == 0) {
            bad = parse_mig(&r, where) != 0;
        } else if (strcmp(type, "nvlink") == 0) {
            bad = parse_nvlink(&r, where) != 0;
        } else if (strcmp(type, "pair") == 0) {
            bad = parse_pair(&r, where) != 0;
        } else if (strcmp(type, "error") == 0) {
            bad = parse_error(&r, where) != 0;
        } else {
            complain("%s: unknown record type '%s'", where, type);
            bad = 1;
        }
    }
    free(line);
    fclose(f);
    if (!bad && !have_system) {
        complain("%s: no 'system' record", path);
        bad = 1;
    }
    if (!bad && !(T.lost = calloc((size_t)T.n_gpus + 1, 1))) bad = 1;
    if (bad) {
        free_topology();
        return NVML_ERROR_UNKNOWN;
    }
    events_locate(path);
    T.loaded = 1;
    return NVML_SUCCESS;
}

/* ---------------------------------------------------------------- error injection */

static const char *base_name(const char *call, char *buf, size_t size) {
    /* Rules name the unversioned entry point; nvmlDeviceGetCount_v2 matches nvmlDeviceGetCount. */
    copy_str(buf, size, call);
    char *u = strrchr(buf, '_');
    if (u && u[1] == 'v' && isdigit((unsigned char)u[2])) *u = '\0';
    return buf;
}

/* ---------------------------------------------------------------- events file
 *
 * Tests append lines to the events file while processes hold the library; each reader keeps its
 * own offset and consumes only complete lines, so a write in progress is never half-read. */

enum event_kind { EV_XID, EV_SBE, EV_DBE, EV_LOST, EV_RECOVERED, EV_WAIT_ERROR };

typedef struct fake_event {
    enum event_kind kind;
    int gpu;
    unsigned int gi, ci;
    unsigned long long data;
    nvmlReturn_t code;
} fake_event;

#define NO_INSTANCE 0xFFFFFFFFu /* gpuInstanceId/computeInstanceId not attributable */

/* The complete line at *off into buf (truncated to cap, still consumed whole); 1 when there was
 * one (*off then points past it), 0 when no complete line is there yet. */
static int read_line(int fd, long long *off, char *buf, size_t cap) {
    long long pos = *off;
    size_t have = 0;
    for (;;) {
        char chunk[512];
        ssize_t n = pread(fd, chunk, sizeof chunk, (off_t)pos);
        if (n <= 0) return 0;
        char *nl = memchr(chunk, '\n', (size_t)n);
        size_t take = nl ? (size_t)(nl - chunk) : (size_t)n;
        size_t room = cap - 1 - have;
        memcpy(buf + have, chunk, take < room ? take : room);
        have += take < room ? take : room;
        if (nl) {
            buf[have] = '\0';
            *off = pos + (long long)take + 1;
            return 1;
        }
        pos += n;
    }
}

/* GPU index and MIG handle index (-1: the GPU itself) of a UUID. */
static int find_uuid(const char *uuid, int *gpu, int *mig) {
    for (int i = 0; i < T.n_gpus; i++) {
        if (strcmp(T.gpus[i]->uuid, uuid) == 0) {
            *gpu = i;
            *mig = -1;
            return 0;
        }
        for (int j = 0; j < T.gpus[i]->n_migs; j++) {
            if (strcmp(T.gpus[i]->migs[j]->uuid, uuid) == 0) {
                *gpu = i;
                *mig = j;
                return 0;
            }
        }
    }
    return -1;
}

static int parse_number(const char *s, unsigned long long *out) {
    char *end;
    if (!s || !isdigit((unsigned char)*s)) return -1;
    errno = 0;
    *out = strtoull(s, &end, 0);
    return errno || *end ? -1 : 0;
}

/* One line of the events file; -1 (with *why set) when malformed. */
static int parse_event(char *line, fake_event *ev, const char **why) {
    char *save = NULL, *tok[6];
    int n = 0;
    for (char *t = strtok_r(line, " \t", &save); t; t = strtok_r(NULL, " \t", &save)) {
        if (n == 6) return *why = "too many fields", -1;
        tok[n++] = t;
    }
    if (n == 0) return *why = "empty line", -1;
    memset(ev, 0, sizeof *ev);
    ev->gi = ev->ci = NO_INSTANCE;
    ev->gpu = -1;
    unsigned long long v;
    if (strcmp(tok[0], "wait-error") == 0) {
        if (n != 2 || parse_number(tok[1], &v) || v == 0)
            return *why = "expected: wait-error <nvmlReturn_t number>", -1;
        ev->kind = EV_WAIT_ERROR;
        ev->code = (nvmlReturn_t)v;
        return 0;
    }
    static const struct {
        const char *name;
        enum event_kind kind;
        int min, max;
    } kinds[] = {
        {"xid", EV_XID, 3, 5},    {"ecc-sbe", EV_SBE, 2, 2},         {"ecc-dbe", EV_DBE, 2, 2},
        {"lost", EV_LOST, 2, 2}, {"recovered", EV_RECOVERED, 2, 2},
    };
    size_t k = 0;
    while (k < sizeof kinds / sizeof kinds[0] && strcmp(kinds[k].name, tok[0]) != 0) k++;
    if (k == sizeof kinds / sizeof kinds[0]) return *why = "unknown event", -1;
    if (n < kinds[k].min || n > kinds[k].max || n == 4)
        return *why = "wrong number of fields (xid <uuid> <xid> [<gi> <ci>]; other: <kind> <uuid>)",
               -1;
    ev->kind = kinds[k].kind;
    int mig;
    if (find_uuid(tok[1], &ev->gpu, &mig)) return *why = "no device with this UUID", -1;
    if (mig >= 0) {
        if (ev->kind == EV_LOST || ev->kind == EV_RECOVERED)
            return *why = "lost/recovered take a GPU UUID, not a MIG device's", -1;
        ev->gi = T.gpus[ev->gpu]->migs[mig]->gi_id;
        ev->ci = T.gpus[ev->gpu]->migs[mig]->ci_id;
    }
    if (ev->kind == EV_XID) {
        if (parse_number(tok[2], &ev->data)) return *why = "the XID is not a number", -1;
        unsigned long long gi, ci;
        if (n == 5) {
            if (parse_number(tok[3], &gi) || parse_number(tok[4], &ci))
                return *why = "GPU/compute instance ids are not numbers", -1;
            ev->gi = (unsigned int)gi;
            ev->ci = (unsigned int)ci;
        }
    }
    return 0;
}

/* Opens the events file once it exists; a file that shrank was rewritten: rescan it. */
static int events_refresh_locked(void) {
    if (!T.events_open) {
        if (!T.events_path[0]) return -1;
        const char *why;
        int fd = open_regular(T.events_path, &why);
        if (fd < 0) {
            /* not there yet is normal; anything else is worth saying once */
            if (errno != ENOENT && !T.events_unreadable) {
                complain("events file %s: %s (no events)", T.events_path, why);
                T.events_unreadable = 1;
            }
            return -1;
        }
        T.events_fd = fd;
        T.events_open = 1;
    }
    struct stat st;
    if (fstat(T.events_fd, &st) != 0) return -1;
    if (st.st_size < T.events_scanned) {
        T.events_scanned = 0;
        memset(T.lost, 0, (size_t)T.n_gpus);
        for (fake_event_set *s = T.sets; s; s = s->next) {
            s->offset = 0;
            memset(s->since, 0, sizeof *s->since * (size_t)T.n_gpus);
        }
    }
    return 0;
}

/* Applies lost/recovered lines (state, not events: they hold for every later call). */
static void events_sync_locked(void) {
    if (events_refresh_locked()) return;
    char line[1024], shown[sizeof line];
    long long at = T.events_scanned;
    while (read_line(T.events_fd, &T.events_scanned, line, sizeof line)) {
        fake_event ev;
        const char *why;
        memcpy(shown, line, sizeof line); /* parse_event splits `line` in place */
        if (parse_event(line, &ev, &why)) {
            complain("%s: byte %lld: %s: '%s' (ignored)", T.events_path, at, why, shown);
        } else if (ev.kind == EV_LOST || ev.kind == EV_RECOVERED) {
            T.lost[ev.gpu] = ev.kind == EV_LOST;
        }
        at = T.events_scanned;
    }
}

/* gpu < 0: a call not tied to a device. mig < 0: the full GPU. */
static nvmlReturn_t injected(const char *call, int gpu, int mig) {
    char buf[MAX_FIELD];
    const char *name = T.n_errors ? base_name(call, buf, sizeof buf) : call;
    nvmlReturn_t ret = NVML_SUCCESS;
    pthread_mutex_lock(&lock);
    if (gpu >= 0) {
        events_sync_locked();
        if (gpu < T.n_gpus && T.lost[gpu]) ret = NVML_ERROR_GPU_IS_LOST;
    }
    for (int i = 0; ret == NVML_SUCCESS && i < T.n_errors; i++) {
        fake_error *e = &T.errors[i];
        if (e->remaining == 0) continue;
        if (strcmp(e->call, "*") != 0 && strcmp(e->call, name) != 0) continue;
        if (e->gpu >= 0 && e->gpu != gpu) continue;
        if (e->mig >= 0 && e->mig != mig) continue;
        if (e->remaining > 0) e->remaining--;
        ret = e->code;
        break;
    }
    pthread_mutex_unlock(&lock);
    return ret;
}

#define CHECK_INIT()                                   \
    do {                                               \
        if (!T.loaded) return NVML_ERROR_UNINITIALIZED; \
    } while (0)

#define INJECT(call, gpu, mig)                          \
    do {                                                \
        nvmlReturn_t inj_ = injected(call, gpu, mig);   \
        if (inj_ != NVML_SUCCESS) return inj_;          \
    } while (0)

static fake_device *as_device(nvmlDevice_t h) {
    fake_device *d = (fake_device *)h;
    if (!d) return NULL;
    /* Only pointers we handed out are dereferenced. */
    for (int i = 0; i < T.n_gpus; i++) {
        if (T.gpus[i] == d) return d;
        for (int j = 0; j < T.gpus[i]->n_migs; j++)
            if (T.gpus[i]->migs[j] == d) return d;
    }
    return NULL;
}

#define DEVICE(var, handle, call)                                      \
    CHECK_INIT();                                                      \
    fake_device *var = as_device(handle);                              \
    if (!var) return NVML_ERROR_INVALID_ARGUMENT;                      \
    INJECT(call, var->gpu, var->kind == KIND_MIG ? var->mig_index : -1)

/* ---------------------------------------------------------------- init and system */

/* A failed init frees the topology and its rule counters, so nvmlInit rules count here, per
 * topology file (a test process moves between hosts). */
static long injected_init_failures;
static char init_failures_path[4096];

static nvmlReturn_t do_init_locked(const char *call) {
    if (T.refcount > 0) {
        T.refcount++;
        return NVML_SUCCESS;
    }
    nvmlReturn_t ret = load_topology();
    if (ret != NVML_SUCCESS) return ret;
    const char *path = getenv("FAKE_NVML_TOPOLOGY");
    if (strcmp(path, init_failures_path) != 0) {
        copy_str(init_failures_path, sizeof init_failures_path, path);
        injected_init_failures = 0;
    }
    /* the same matching as injected(), which would take the lock again */
    for (int i = 0; i < T.n_errors; i++) {
        fake_error *e = &T.errors[i];
        if ((e->remaining < 0 || injected_init_failures < e->remaining) &&
            (strcmp(e->call, "*") == 0 || strcmp(e->call, call) == 0) && e->gpu < 0) {
            nvmlReturn_t code = e->code;
            injected_init_failures++;
            free_topology();
            return code;
        }
    }
    T.refcount = 1;
    return NVML_SUCCESS;
}

static nvmlReturn_t do_init(const char *call) {
    pthread_mutex_lock(&lock);
    nvmlReturn_t ret = do_init_locked(call);
    pthread_mutex_unlock(&lock);
    return ret;
}

EXPORT nvmlReturn_t nvmlInit_v2(void) { return do_init("nvmlInit"); }
EXPORT nvmlReturn_t nvmlInit(void) { return do_init("nvmlInit"); }
EXPORT nvmlReturn_t nvmlInitWithFlags(unsigned int flags) {
    (void)flags;
    return do_init("nvmlInit");
}

EXPORT nvmlReturn_t nvmlShutdown(void) {
    CHECK_INIT();
    INJECT("nvmlShutdown", -1, -1);
    pthread_mutex_lock(&lock);
    if (T.refcount > 0 && --T.refcount == 0) free_topology();
    pthread_mutex_unlock(&lock);
    return NVML_SUCCESS;
}

EXPORT const char *nvmlErrorString(nvmlReturn_t result) {
    switch (result) {
    case NVML_SUCCESS: return "Success";
    case NVML_ERROR_UNINITIALIZED: return "Uninitialized";
    case NVML_ERROR_INVALID_ARGUMENT: return "Invalid Argument";
    case NVML_ERROR_NOT_SUPPORTED: return "Not Supported";
    case NVML_ERROR_NO_PERMISSION: return "Insufficient Permissions";
    case NVML_ERROR_ALREADY_INITIALIZED: return "Already Initialized";
    case NVML_ERROR_NOT_FOUND: return "Not Found";
    case NVML_ERROR_INSUFFICIENT_SIZE: return "Insufficient Size";
    case NVML_ERROR_INSUFFICIENT_POWER: return "Insufficient External Power";
    case NVML_ERROR_DRIVER_NOT_LOADED: return "Driver Not Loaded";
    case NVML_ERROR_TIMEOUT: return "Timeout";
    case NVML_ERROR_IRQ_ISSUE: return "Interrupt request issue";
    case NVML_ERROR_LIBRARY_NOT_FOUND: return "NVML Shared Library Not Found";
    case NVML_ERROR_FUNCTION_NOT_FOUND: return "Function Not Found";
    case NVML_ERROR_CORRUPTED_INFOROM: return "Corrupted infoROM";
    case NVML_ERROR_GPU_IS_LOST: return "GPU is lost";
    case NVML_ERROR_RESET_REQUIRED: return "GPU requires restart";
    case NVML_ERROR_OPERATING_SYSTEM: return "The operating system has blocked the request.";
    case NVML_ERROR_LIB_RM_VERSION_MISMATCH: return "RM has detected an NVML/RM version mismatch.";
    case NVML_ERROR_IN_USE: return "In use by another client";
    case NVML_ERROR_MEMORY: return "Insufficient Memory";
    case NVML_ERROR_NO_DATA: return "No data";
    case NVML_ERROR_VGPU_ECC_NOT_SUPPORTED: return "ECC is enabled";
    case NVML_ERROR_INSUFFICIENT_RESOURCES: return "Insufficient Resources";
    case NVML_ERROR_FREQ_NOT_SUPPORTED: return "Frequency not supported";
    case NVML_ERROR_ARGUMENT_VERSION_MISMATCH: return "Argument version mismatch";
    case NVML_ERROR_DEPRECATED: return "Deprecated";
    case NVML_ERROR_NOT_READY: return "Not ready";
    case NVML_ERROR_GPU_NOT_FOUND: return "GPU not found";
    case NVML_ERROR_INVALID_STATE: return "Invalid state";
    default: return "Unknown Error";
    }
}

static nvmlReturn_t put_string(char *dst, unsigned int length, const char *src) {
    if (!dst) return NVML_ERROR_INVALID_ARGUMENT;
    if (strlen(src) + 1 > length) return NVML_ERROR_INSUFFICIENT_SIZE;
    memcpy(dst, src, strlen(src) + 1);
    return NVML_SUCCESS;
}

EXPORT nvmlReturn_t nvmlSystemGetDriverVersion(char *version, unsigned int length) {
    CHECK_INIT();
    INJECT("nvmlSystemGetDriverVersion", -1, -1);
    return put_string(version, length, T.driver);
}

EXPORT nvmlReturn_t nvmlSystemGetNVMLVersion(char *version, unsigned int length) {
    CHECK_INIT();
    INJECT("nvmlSystemGetNVMLVersion", -1, -1);
    return put_string(version, length, T.nvml);
}

static nvmlReturn_t cuda_version(const char *call, int *v) {
    /* Real NVML answers this one even before nvmlInit; it reads the version from libcuda. */
    if (!T.loaded) return NVML_ERROR_UNINITIALIZED;
    INJECT(call, -1, -1);
    if (!v) return NVML_ERROR_INVALID_ARGUMENT;
    *v = T.cuda;
    return NVML_SUCCESS;
}

EXPORT nvmlReturn_t nvmlSystemGetCudaDriverVersion(int *v) {
    return cuda_version("nvmlSystemGetCudaDriverVersion", v);
}
EXPORT nvmlReturn_t nvmlSystemGetCudaDriverVersion_v2(int *v) {
    return cuda_version("nvmlSystemGetCudaDriverVersion", v);
}

/* ---------------------------------------------------------------- enumeration */

static nvmlReturn_t device_count(unsigned int *count) {
    CHECK_INIT();
    INJECT("nvmlDeviceGetCount", -1, -1);
    if (!count) return NVML_ERROR_INVALID_ARGUMENT;
    *count = (unsigned int)T.n_gpus;
    return NVML_SUCCESS;
}
EXPORT nvmlReturn_t nvmlDeviceGetCount_v2(unsigned int *count) { return device_count(count); }
EXPORT nvmlReturn_t nvmlDeviceGetCount(unsigned int *count) { return device_count(count); }

static nvmlReturn_t handle_by_index(unsigned int index, nvmlDevice_t *device) {
    CHECK_INIT();
    if (!device || index >= (unsigned int)T.n_gpus) return NVML_ERROR_INVALID_ARGUMENT;
    INJECT("nvmlDeviceGetHandleByIndex", (int)index, -1);
    *device = (nvmlDevice_t)T.gpus[index];
    return NVML_SUCCESS;
}
EXPORT nvmlReturn_t nvmlDeviceGetHandleByIndex_v2(unsigned int index, nvmlDevice_t *device) {
    return handle_by_index(index, device);
}
EXPORT nvmlReturn_t nvmlDeviceGetHandleByIndex(unsigned int index, nvmlDevice_t *device) {
    return handle_by_index(index, device);
}

EXPORT nvmlReturn_t nvmlDeviceGetHandleByUUID(const char *uuid, nvmlDevice_t *device) {
    CHECK_INIT();
    if (!uuid || !device) return NVML_ERROR_INVALID_ARGUMENT;
    for (int i = 0; i < T.n_gpus; i++) {
        fake_device *g = T.gpus[i];
        if (strcmp(g->uuid, uuid) == 0) {
            INJECT("nvmlDeviceGetHandleByUUID", i, -1);
            *device = (nvmlDevice_t)g;
            return NVML_SUCCESS;
        }
        for (int j = 0; j < g->n_migs; j++) {
            if (strcmp(g->migs[j]->uuid, uuid) == 0) {
                INJECT("nvmlDeviceGetHandleByUUID", i, j);
                *device = (nvmlDevice_t)g->migs[j];
                return NVML_SUCCESS;
            }
        }
    }
    INJECT("nvmlDeviceGetHandleByUUID", -1, -1);
    return NVML_ERROR_NOT_FOUND;
}

static int parse_bus_id(const char *s, unsigned int *domain, unsigned int *bus, unsigned int *dev) {
    unsigned int fn = 0;
    char tail;
    if (sscanf(s, "%x:%x:%x.%x%c", domain, bus, dev, &fn, &tail) == 4) return 0;
    *domain = 0;
    if (sscanf(s, "%x:%x.%x%c", bus, dev, &fn, &tail) == 3) return 0;
    return -1;
}

static nvmlReturn_t handle_by_bus_id(const char *busid, nvmlDevice_t *device) {
    CHECK_INIT();
    unsigned int domain, bus, dev;
    if (!busid || !device || parse_bus_id(busid, &domain, &bus, &dev))
        return NVML_ERROR_INVALID_ARGUMENT;
    for (int i = 0; i < T.n_gpus; i++) {
        fake_device *g = T.gpus[i];
        if (g->domain == domain && g->bus == bus && g->dev == dev) {
            INJECT("nvmlDeviceGetHandleByPciBusId", i, -1);
            *device = (nvmlDevice_t)g;
            return NVML_SUCCESS;
        }
    }
    INJECT("nvmlDeviceGetHandleByPciBusId", -1, -1);
    return NVML_ERROR_NOT_FOUND;
}
EXPORT nvmlReturn_t nvmlDeviceGetHandleByPciBusId_v2(const char *busid, nvmlDevice_t *device) {
    return handle_by_bus_id(busid, device);
}
EXPORT nvmlReturn_t nvmlDeviceGetHandleByPciBusId(const char *busid, nvmlDevice_t *device) {
    return handle_by_bus_id(busid, device);
}

/* ---------------------------------------------------------------- identity */

EXPORT nvmlReturn_t nvmlDeviceGetName(nvmlDevice_t device, char *name, unsigned int length) {
    DEVICE(d, device, "nvmlDeviceGetName");
    return put_string(name, length, d->name);
}

EXPORT nvmlReturn_t nvmlDeviceGetUUID(nvmlDevice_t device, char *uuid, unsigned int length) {
    DEVICE(d, device, "nvmlDeviceGetUUID");
    return put_string(uuid, length, d->uuid);
}

EXPORT nvmlReturn_t nvmlDeviceGetMinorNumber(nvmlDevice_t device, unsigned int *minor) {
    DEVICE(d, device, "nvmlDeviceGetMinorNumber");
    if (!minor) return NVML_ERROR_INVALID_ARGUMENT;
    /* A MIG device has no /dev/nvidiaN of its own; callers use the parent's minor. */
    if (d->kind == KIND_MIG) return NVML_ERROR_NOT_SUPPORTED;
    *minor = d->minor;
    return NVML_SUCCESS;
}

static void fill_pci(nvmlPciInfo_t *pci, unsigned int domain, unsigned int bus, unsigned int dev,
                     unsigned int device_id, unsigned int subsystem_id) {
    memset(pci, 0, sizeof *pci);
    snprintf(pci->busIdLegacy, sizeof pci->busIdLegacy, NVML_DEVICE_PCI_BUS_ID_LEGACY_FMT, domain,
             bus, dev);
    snprintf(pci->busId, sizeof pci->busId, NVML_DEVICE_PCI_BUS_ID_FMT, domain, bus, dev);
    pci->domain = domain;
    pci->bus = bus;
    pci->device = dev;
    pci->pciDeviceId = device_id;
    pci->pciSubSystemId = subsystem_id;
}

static nvmlReturn_t pci_info(nvmlDevice_t device, nvmlPciInfo_t *pci, const char *call) {
    DEVICE(d, device, call);
    if (!pci) return NVML_ERROR_INVALID_ARGUMENT;
    fill_pci(pci, d->domain, d->bus, d->dev, d->pci_device_id, d->pci_subsystem_id);
    return NVML_SUCCESS;
}
EXPORT nvmlReturn_t nvmlDeviceGetPciInfo_v3(nvmlDevice_t device, nvmlPciInfo_t *pci) {
    return pci_info(device, pci, "nvmlDeviceGetPciInfo");
}
EXPORT nvmlReturn_t nvmlDeviceGetPciInfo_v2(nvmlDevice_t device, nvmlPciInfo_t *pci) {
    return pci_info(device, pci, "nvmlDeviceGetPciInfo");
}

EXPORT nvmlReturn_t nvmlDeviceGetArchitecture(nvmlDevice_t device,
                                              nvmlDeviceArchitecture_t *arch) {
    DEVICE(d, device, "nvmlDeviceGetArchitecture");
    if (!arch) return NVML_ERROR_INVALID_ARGUMENT;
    *arch = d->arch;
    return NVML_SUCCESS;
}

EXPORT nvmlReturn_t nvmlDeviceGetCudaComputeCapability(nvmlDevice_t device, int *major,
                                                       int *minor) {
    DEVICE(d, device, "nvmlDeviceGetCudaComputeCapability");
    if (!major || !minor) return NVML_ERROR_INVALID_ARGUMENT;
    *major = d->cc_major;
    *minor = d->cc_minor;
    return NVML_SUCCESS;
}

EXPORT nvmlReturn_t nvmlDeviceGetMemoryInfo(nvmlDevice_t device, nvmlMemory_t *memory) {
    DEVICE(d, device, "nvmlDeviceGetMemoryInfo");
    if (!memory) return NVML_ERROR_INVALID_ARGUMENT;
    /* v1 counts reserved memory as used */
    memory->total = d->mem_total;
    memory->used = d->mem_reserved + d->mem_used;
    memory->free = d->mem_total - memory->used;
    return NVML_SUCCESS;
}

EXPORT nvmlReturn_t nvmlDeviceGetMemoryInfo_v2(nvmlDevice_t device, nvmlMemory_v2_t *memory) {
    DEVICE(d, device, "nvmlDeviceGetMemoryInfo");
    if (!memory) return NVML_ERROR_INVALID_ARGUMENT;
    if (memory->version != nvmlMemory_v2) return NVML_ERROR_ARGUMENT_VERSION_MISMATCH;
    memory->total = d->mem_total;
    memory->reserved = d->mem_reserved;
    memory->used = d->mem_used;
    memory->free = d->mem_total - d->mem_reserved - d->mem_used;
    return NVML_SUCCESS;
}

/* ---------------------------------------------------------------- MIG */

EXPORT nvmlReturn_t nvmlDeviceGetMigMode(nvmlDevice_t device, unsigned int *current,
                                         unsigned int *pending) {
    DEVICE(d, device, "nvmlDeviceGetMigMode");
    if (!current || !pending) return NVML_ERROR_INVALID_ARGUMENT;
    if (d->kind == KIND_MIG || !d->mig_supported) return NVML_ERROR_NOT_SUPPORTED;
    *current = d->mig_current;
    *pending = d->mig_pending;
    return NVML_SUCCESS;
}

EXPORT nvmlReturn_t nvmlDeviceGetMaxMigDeviceCount(nvmlDevice_t device, unsigned int *count) {
    DEVICE(d, device, "nvmlDeviceGetMaxMigDeviceCount");
    if (!count || d->kind == KIND_MIG) return NVML_ERROR_INVALID_ARGUMENT;
    *count = d->mig_supported ? d->max_mig : 0;
    return NVML_SUCCESS;
}

EXPORT nvmlReturn_t nvmlDeviceGetMigDeviceHandleByIndex(nvmlDevice_t device, unsigned int index,
                                                        nvmlDevice_t *mig) {
    CHECK_INIT();
    fake_device *d = as_device(device);
    if (!d || !mig || d->kind == KIND_MIG) return NVML_ERROR_INVALID_ARGUMENT;
    /* a rule on "g:i" fails the lookup of MIG device i as well as calls on it */
    INJECT("nvmlDeviceGetMigDeviceHandleByIndex", d->gpu, (int)index);
    if (!d->mig_supported) return NVML_ERROR_NOT_SUPPORTED;
    if (index >= d->max_mig) return NVML_ERROR_INVALID_ARGUMENT;
    if (d->mig_current != NVML_DEVICE_MIG_ENABLE || index >= (unsigned int)d->n_migs)
        return NVML_ERROR_NOT_FOUND;
    *mig = (nvmlDevice_t)d->migs[index];
    return NVML_SUCCESS;
}

EXPORT nvmlReturn_t nvmlDeviceGetDeviceHandleFromMigDeviceHandle(nvmlDevice_t mig,
                                                                 nvmlDevice_t *device) {
    DEVICE(m, mig, "nvmlDeviceGetDeviceHandleFromMigDeviceHandle");
    if (!device || m->kind != KIND_MIG) return NVML_ERROR_INVALID_ARGUMENT;
    *device = (nvmlDevice_t)T.gpus[m->gpu];
    return NVML_SUCCESS;
}

EXPORT nvmlReturn_t nvmlDeviceIsMigDeviceHandle(nvmlDevice_t device, unsigned int *is_mig) {
    DEVICE(d, device, "nvmlDeviceIsMigDeviceHandle");
    if (!is_mig) return NVML_ERROR_INVALID_ARGUMENT;
    *is_mig = d->kind == KIND_MIG;
    return NVML_SUCCESS;
}

EXPORT nvmlReturn_t nvmlDeviceGetGpuInstanceId(nvmlDevice_t device, unsigned int *id) {
    DEVICE(d, device, "nvmlDeviceGetGpuInstanceId");
    if (!id || d->kind != KIND_MIG) return NVML_ERROR_INVALID_ARGUMENT;
    *id = d->gi_id;
    return NVML_SUCCESS;
}

EXPORT nvmlReturn_t nvmlDeviceGetComputeInstanceId(nvmlDevice_t device, unsigned int *id) {
    DEVICE(d, device, "nvmlDeviceGetComputeInstanceId");
    if (!id || d->kind != KIND_MIG) return NVML_ERROR_INVALID_ARGUMENT;
    *id = d->ci_id;
    return NVML_SUCCESS;
}

/* The V entry point documents NOT_SUPPORTED without MIG mode enabled, the v1 one only without
 * MIG support; both are reproduced. */
static nvmlReturn_t find_profile(fake_device *d, unsigned int profile, int need_enabled,
                                 fake_gi_profile **out) {
    if (d->kind == KIND_MIG || !d->mig_supported) return NVML_ERROR_NOT_SUPPORTED;
    if (need_enabled && d->mig_current != NVML_DEVICE_MIG_ENABLE) return NVML_ERROR_NOT_SUPPORTED;
    if (profile >= NVML_GPU_INSTANCE_PROFILE_COUNT) return NVML_ERROR_INVALID_ARGUMENT;
    for (int i = 0; i < d->n_profiles; i++) {
        if (d->profiles[i].index == profile) {
            *out = &d->profiles[i];
            return NVML_SUCCESS;
        }
    }
    return NVML_ERROR_NOT_SUPPORTED;
}

/* The v1 and v2 profile-info structs share these fields but are different types. */
#define FILL_GI_PROFILE(info, p)                  \
    do {                                          \
        (info)->id = (p)->id;                     \
        (info)->isP2pSupported = (p)->p2p;        \
        (info)->sliceCount = (p)->slices;         \
        (info)->instanceCount = (p)->instances;   \
        (info)->multiprocessorCount = (p)->sms;   \
        (info)->copyEngineCount = (p)->ce;        \
        (info)->decoderCount = (p)->dec;          \
        (info)->encoderCount = (p)->enc;          \
        (info)->jpegCount = (p)->jpeg;            \
        (info)->ofaCount = (p)->ofa;              \
        (info)->memorySizeMB = (p)->mem_mb;       \
    } while (0)

EXPORT nvmlReturn_t nvmlDeviceGetGpuInstanceProfileInfo(nvmlDevice_t device, unsigned int profile,
                                                        nvmlGpuInstanceProfileInfo_t *info) {
    DEVICE(d, device, "nvmlDeviceGetGpuInstanceProfileInfo");
    if (!info) return NVML_ERROR_INVALID_ARGUMENT;
    fake_gi_profile *p;
    nvmlReturn_t ret = find_profile(d, profile, 0, &p);
    if (ret != NVML_SUCCESS) return ret;
    FILL_GI_PROFILE(info, p);
    return NVML_SUCCESS;
}

EXPORT nvmlReturn_t nvmlDeviceGetGpuInstanceProfileInfoV(nvmlDevice_t device, unsigned int profile,
                                                         nvmlGpuInstanceProfileInfo_v2_t *info) {
    DEVICE(d, device, "nvmlDeviceGetGpuInstanceProfileInfo");
    if (!info) return NVML_ERROR_INVALID_ARGUMENT;
    fake_gi_profile *p;
    nvmlReturn_t ret = find_profile(d, profile, 1, &p);
    if (ret != NVML_SUCCESS) return ret;
    if (info->version == nvmlGpuInstanceProfileInfo_v2) {
        FILL_GI_PROFILE(info, p);
        copy_str(info->name, sizeof info->name, p->name);
        return NVML_SUCCESS;
    }
    if (info->version == nvmlGpuInstanceProfileInfo_v3) {
        nvmlGpuInstanceProfileInfo_v3_t *v3 = (nvmlGpuInstanceProfileInfo_v3_t *)info;
        v3->id = p->id;
        v3->sliceCount = p->slices;
        v3->instanceCount = p->instances;
        v3->multiprocessorCount = p->sms;
        v3->copyEngineCount = p->ce;
        v3->decoderCount = p->dec;
        v3->encoderCount = p->enc;
        v3->jpegCount = p->jpeg;
        v3->ofaCount = p->ofa;
        v3->memorySizeMB = p->mem_mb;
        copy_str(v3->name, sizeof v3->name, p->name);
        v3->capabilities = p->caps;
        return NVML_SUCCESS;
    }
    return NVML_ERROR_ARGUMENT_VERSION_MISMATCH;
}

static fake_gi *as_gi(nvmlGpuInstance_t h) {
    fake_gi *gi = (fake_gi *)h;
    for (int i = 0; i < T.n_gpus; i++) {
        fake_device *d = T.gpus[i];
        if (d->n_gis && gi >= d->gis && gi < d->gis + d->n_gis) return gi;
    }
    return NULL;
}

EXPORT nvmlReturn_t nvmlDeviceGetGpuInstanceById(nvmlDevice_t device, unsigned int id,
                                                 nvmlGpuInstance_t *instance) {
    DEVICE(d, device, "nvmlDeviceGetGpuInstanceById");
    if (!instance || d->kind == KIND_MIG) return NVML_ERROR_INVALID_ARGUMENT;
    if (!d->mig_supported) return NVML_ERROR_NOT_SUPPORTED;
    if (d->mig_current != NVML_DEVICE_MIG_ENABLE) return NVML_ERROR_INVALID_STATE;
    for (int i = 0; i < d->n_gis; i++) {
        if (d->gis[i].id == id) {
            *instance = (nvmlGpuInstance_t)&d->gis[i];
            return NVML_SUCCESS;
        }
    }
    return NVML_ERROR_NOT_FOUND;
}

EXPORT nvmlReturn_t nvmlGpuInstanceGetInfo(nvmlGpuInstance_t instance,
                                           nvmlGpuInstanceInfo_t *info) {
    CHECK_INIT();
    fake_gi *gi = as_gi(instance);
    if (!gi || !info) return NVML_ERROR_INVALID_ARGUMENT;
    INJECT("nvmlGpuInstanceGetInfo", gi->gpu, -1);
    info->device = (nvmlDevice_t)T.gpus[gi->gpu];
    info->id = gi->id;
    info->profileId = gi->profile_id;
    info->placement.start = gi->start;
    info->placement.size = gi->size;
    return NVML_SUCCESS;
}

/* ---------------------------------------------------------------- events */

/* What the boards report: XID, P-state and clock events; ECC events on boards with ECC on. */
#define EVENTS_ALWAYS (nvmlEventTypeXidCriticalError | nvmlEventTypePState | nvmlEventTypeClock)
#define EVENTS_ECC (nvmlEventTypeSingleBitEccError | nvmlEventTypeDoubleBitEccError)

static unsigned long long supported_events(const fake_device *d) {
    return EVENTS_ALWAYS | (d->ecc ? EVENTS_ECC : 0);
}

static fake_event_set *as_set_locked(nvmlEventSet_t h) {
    for (fake_event_set *s = T.sets; s; s = s->next)
        if (s == (fake_event_set *)h && s->magic == FAKE_MAGIC) return s;
    return NULL;
}

static void free_set(fake_event_set *s) {
    s->magic = 0;
    free(s->mask);
    free(s->since);
    free(s);
}

static void free_sets(void) {
    while (T.sets) {
        fake_event_set *next = T.sets->next;
        free_set(T.sets);
        T.sets = next;
    }
}

EXPORT nvmlReturn_t nvmlDeviceGetSupportedEventTypes(nvmlDevice_t device,
                                                      unsigned long long *types) {
    DEVICE(d, device, "nvmlDeviceGetSupportedEventTypes");
    if (!types) return NVML_ERROR_INVALID_ARGUMENT;
    /* NVML reports events per GPU (with GI/CI ids), never on MIG device handles */
    if (d->kind == KIND_MIG) return NVML_ERROR_NOT_SUPPORTED;
    *types = supported_events(d);
    return NVML_SUCCESS;
}

EXPORT nvmlReturn_t nvmlEventSetCreate(nvmlEventSet_t *set) {
    CHECK_INIT();
    if (!set) return NVML_ERROR_INVALID_ARGUMENT;
    INJECT("nvmlEventSetCreate", -1, -1);
    fake_event_set *s = calloc(1, sizeof *s);
    if (!s) return NVML_ERROR_MEMORY;
    s->mask = calloc((size_t)T.n_gpus + 1, sizeof *s->mask);
    s->since = calloc((size_t)T.n_gpus + 1, sizeof *s->since);
    if (!s->mask || !s->since) {
        free_set(s);
        return NVML_ERROR_MEMORY;
    }
    s->magic = FAKE_MAGIC;
    pthread_mutex_lock(&lock);
    /* only what is appended from now on is news to this set */
    if (events_refresh_locked() == 0) {
        struct stat st;
        if (fstat(T.events_fd, &st) == 0) s->offset = st.st_size;
    }
    s->next = T.sets;
    T.sets = s;
    pthread_mutex_unlock(&lock);
    *set = (nvmlEventSet_t)s;
    return NVML_SUCCESS;
}

EXPORT nvmlReturn_t nvmlDeviceRegisterEvents(nvmlDevice_t device, unsigned long long types,
                                             nvmlEventSet_t set) {
    DEVICE(d, device, "nvmlDeviceRegisterEvents");
    if (types & ~(unsigned long long)nvmlEventTypeAll) return NVML_ERROR_INVALID_ARGUMENT;
    if (d->kind == KIND_MIG || (types & ~supported_events(d))) return NVML_ERROR_NOT_SUPPORTED;
    nvmlReturn_t ret = NVML_SUCCESS;
    pthread_mutex_lock(&lock);
    fake_event_set *s = as_set_locked(set);
    if (!s) {
        ret = NVML_ERROR_INVALID_ARGUMENT;
    } else {
        if (!s->mask[d->gpu] && events_refresh_locked() == 0) {
            struct stat st;
            s->since[d->gpu] = fstat(T.events_fd, &st) == 0 ? st.st_size : 0;
        }
        s->mask[d->gpu] |= types;
    }
    pthread_mutex_unlock(&lock);
    return ret;
}

static unsigned long long event_type(enum event_kind kind) {
    switch (kind) {
    case EV_XID: return nvmlEventTypeXidCriticalError;
    case EV_SBE: return nvmlEventTypeSingleBitEccError;
    case EV_DBE: return nvmlEventTypeDoubleBitEccError;
    default: return 0;
    }
}

/* The next event for `s`: SUCCESS (data filled), an injected wait error, or -1 for none yet. */
static int next_event_locked(fake_event_set *s, nvmlEventData_t *data) {
    if (events_refresh_locked()) return -1;
    char line[1024];
    long long at = s->offset;
    while (read_line(T.events_fd, &s->offset, line, sizeof line)) {
        fake_event ev;
        const char *why;
        /* malformed lines are reported once, by events_sync_locked */
        if (parse_event(line, &ev, &why) == 0) {
            if (ev.kind == EV_WAIT_ERROR) return (int)ev.code;
            unsigned long long type = event_type(ev.kind);
            if (type && (s->mask[ev.gpu] & type) && at >= s->since[ev.gpu]) {
                data->device = (nvmlDevice_t)T.gpus[ev.gpu];
                data->eventType = type;
                data->eventData = ev.kind == EV_XID ? ev.data : 0;
                data->gpuInstanceId = ev.gi;
                data->computeInstanceId = ev.ci;
                return NVML_SUCCESS;
            }
        }
        at = s->offset;
    }
    return -1;
}

static long long now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* An inotify descriptor that wakes on writes into the events file's directory, or -1 (then the
 * wait polls the file every few milliseconds). */
static int watch_events_dir(void) {
    char dir[sizeof T.events_path];
    copy_str(dir, sizeof dir, T.events_path);
    char *slash = strrchr(dir, '/');
    if (slash == dir) slash[1] = '\0';
    else if (slash) *slash = '\0';
    else copy_str(dir, sizeof dir, ".");
    int fd = inotify_init1(IN_CLOEXEC | IN_NONBLOCK);
    if (fd < 0) return -1;
    if (inotify_add_watch(fd, dir, IN_MODIFY | IN_CREATE | IN_MOVED_TO | IN_CLOSE_WRITE) < 0) {
        close(fd);
        return -1;
    }
    return fd;
}

static nvmlReturn_t event_wait(nvmlEventSet_t set, nvmlEventData_t *data, unsigned int timeoutms) {
    CHECK_INIT();
    if (!data) return NVML_ERROR_INVALID_ARGUMENT;
    INJECT("nvmlEventSetWait", -1, -1);
    long long deadline = now_ms() + timeoutms;
    /* watch before looking, so a line appended in between still wakes us */
    int wfd = watch_events_dir();
    int ret;
    for (;;) {
        pthread_mutex_lock(&lock);
        fake_event_set *s = T.loaded ? as_set_locked(set) : NULL;
        if (!T.loaded) ret = NVML_ERROR_UNINITIALIZED; /* shut down while waiting */
        else ret = s ? next_event_locked(s, data) : NVML_ERROR_INVALID_ARGUMENT;
        pthread_mutex_unlock(&lock);
        if (ret >= 0) break;
        long long left = deadline - now_ms();
        if (left <= 0) {
            ret = NVML_ERROR_TIMEOUT;
            break;
        }
        if (wfd >= 0) {
            /* bounded, in case the directory is on a filesystem without inotify */
            struct pollfd p = {wfd, POLLIN, 0};
            if (poll(&p, 1, (int)(left < 200 ? left : 200)) > 0) {
                char drain[4096];
                while (read(wfd, drain, sizeof drain) > 0) {
                }
            }
        } else {
            struct timespec ts = {0, (left < 10 ? left : 10) * 1000000L};
            nanosleep(&ts, NULL);
        }
    }
    if (wfd >= 0) close(wfd);
    return (nvmlReturn_t)ret;
}

EXPORT nvmlReturn_t nvmlEventSetWait_v2(nvmlEventSet_t set, nvmlEventData_t *data,
                                        unsigned int timeoutms) {
    return event_wait(set, data, timeoutms);
}
EXPORT nvmlReturn_t nvmlEventSetWait(nvmlEventSet_t set, nvmlEventData_t *data,
                                     unsigned int timeoutms) {
    return event_wait(set, data, timeoutms);
}

EXPORT nvmlReturn_t nvmlEventSetFree(nvmlEventSet_t set) {
    CHECK_INIT();
    INJECT("nvmlEventSetFree", -1, -1);
    nvmlReturn_t ret = NVML_ERROR_INVALID_ARGUMENT;
    pthread_mutex_lock(&lock);
    for (fake_event_set **p = &T.sets; *p; p = &(*p)->next) {
        if (*p == (fake_event_set *)set) {
            fake_event_set *s = *p;
            *p = s->next;
            free_set(s);
            ret = NVML_SUCCESS;
            break;
        }
    }
    pthread_mutex_unlock(&lock);
    return ret;
}

/* ---------------------------------------------------------------- interconnect */

/* The link of a GPU: INVALID_ARGUMENT past NVML's maximum, NOT_SUPPORTED on a MIG device or past
 * the links the board has. */
static nvmlReturn_t link_of(fake_device *d, unsigned int link, fake_link **out) {
    if (link >= NVML_NVLINK_MAX_LINKS) return NVML_ERROR_INVALID_ARGUMENT;
    if (d->kind == KIND_MIG || link >= d->nvlinks) return NVML_ERROR_NOT_SUPPORTED;
    *out = &d->links[link];
    return NVML_SUCCESS;
}

#define LINK(var, d, link)                               \
    fake_link *var;                                      \
    do {                                                 \
        nvmlReturn_t link_ret_ = link_of(d, link, &var); \
        if (link_ret_ != NVML_SUCCESS) return link_ret_;  \
    } while (0)

EXPORT nvmlReturn_t nvmlDeviceGetNvLinkState(nvmlDevice_t device, unsigned int link,
                                             nvmlEnableState_t *active) {
    DEVICE(d, device, "nvmlDeviceGetNvLinkState");
    if (!active) return NVML_ERROR_INVALID_ARGUMENT;
    LINK(l, d, link);
    *active = l->active ? NVML_FEATURE_ENABLED : NVML_FEATURE_DISABLED;
    return NVML_SUCCESS;
}

EXPORT nvmlReturn_t nvmlDeviceGetNvLinkVersion(nvmlDevice_t device, unsigned int link,
                                               unsigned int *version) {
    DEVICE(d, device, "nvmlDeviceGetNvLinkVersion");
    if (!version) return NVML_ERROR_INVALID_ARGUMENT;
    LINK(l, d, link);
    (void)l;
    *version = d->nvlink_version;
    return NVML_SUCCESS;
}

/* What every NVLink of a PCIe-attached board can do: P2P and P2P atomics, no system memory. */
EXPORT nvmlReturn_t nvmlDeviceGetNvLinkCapability(nvmlDevice_t device, unsigned int link,
                                                  nvmlNvLinkCapability_t cap,
                                                  unsigned int *result) {
    DEVICE(d, device, "nvmlDeviceGetNvLinkCapability");
    if (!result || (unsigned int)cap >= NVML_NVLINK_CAP_COUNT) return NVML_ERROR_INVALID_ARGUMENT;
    LINK(l, d, link);
    (void)l;
    *result = cap == NVML_NVLINK_CAP_P2P_SUPPORTED || cap == NVML_NVLINK_CAP_P2P_ATOMICS ||
              cap == NVML_NVLINK_CAP_VALID;
    return NVML_SUCCESS;
}

EXPORT nvmlReturn_t nvmlDeviceGetNvLinkRemotePciInfo_v2(nvmlDevice_t device, unsigned int link,
                                                        nvmlPciInfo_t *pci) {
    DEVICE(d, device, "nvmlDeviceGetNvLinkRemotePciInfo");
    if (!pci) return NVML_ERROR_INVALID_ARGUMENT;
    LINK(l, d, link);
    if (!l->active) return NVML_ERROR_NOT_SUPPORTED;
    fill_pci(pci, l->domain, l->bus, l->dev, l->pci_device_id, l->pci_subsystem_id);
    return NVML_SUCCESS;
}

EXPORT nvmlReturn_t nvmlDeviceGetNvLinkRemoteDeviceType(nvmlDevice_t device, unsigned int link,
                                                        nvmlIntNvLinkDeviceType_t *type) {
    DEVICE(d, device, "nvmlDeviceGetNvLinkRemoteDeviceType");
    if (!type) return NVML_ERROR_INVALID_ARGUMENT;
    LINK(l, d, link);
    if (!l->active) return NVML_ERROR_NOT_SUPPORTED;
    *type = (nvmlIntNvLinkDeviceType_t)l->remote_type;
    return NVML_SUCCESS;
}

/* Both handles valid and their error rules consulted; MIG devices have no place in the PCIe
 * topology of their own. */
#define TWO_GPUS(a, h1, b, h2, call)                                       \
    DEVICE(a, h1, call);                                                   \
    fake_device *b = as_device(h2);                                        \
    if (!b) return NVML_ERROR_INVALID_ARGUMENT;                            \
    INJECT(call, b->gpu, b->kind == KIND_MIG ? b->mig_index : -1);         \
    if (a->kind == KIND_MIG || b->kind == KIND_MIG) return NVML_ERROR_NOT_SUPPORTED

static const fake_pair *pair_of(const fake_device *a, const fake_device *b) {
    if (!T.pairs || a->gpu >= T.n_paired || b->gpu >= T.n_paired) return NULL;
    const fake_pair *p = &T.pairs[a->gpu * T.n_paired + b->gpu];
    return p->known ? p : NULL;
}

EXPORT nvmlReturn_t nvmlDeviceGetTopologyCommonAncestor(nvmlDevice_t device1,
                                                        nvmlDevice_t device2,
                                                        nvmlGpuTopologyLevel_t *level) {
    TWO_GPUS(a, device1, b, device2, "nvmlDeviceGetTopologyCommonAncestor");
    if (!level) return NVML_ERROR_INVALID_ARGUMENT;
    if (a == b) {
        *level = NVML_TOPOLOGY_INTERNAL;
        return NVML_SUCCESS;
    }
    const fake_pair *p = pair_of(a, b);
    if (!p) return NVML_ERROR_NOT_SUPPORTED;
    *level = (nvmlGpuTopologyLevel_t)p->ancestor;
    return NVML_SUCCESS;
}

EXPORT nvmlReturn_t nvmlDeviceGetP2PStatus(nvmlDevice_t device1, nvmlDevice_t device2,
                                           nvmlGpuP2PCapsIndex_t index,
                                           nvmlGpuP2PStatus_t *status) {
    TWO_GPUS(a, device1, b, device2, "nvmlDeviceGetP2PStatus");
    if (!status || a == b || (unsigned int)index >= P2P_CAPS) return NVML_ERROR_INVALID_ARGUMENT;
    const fake_pair *p = pair_of(a, b);
    if (!p) return NVML_ERROR_NOT_SUPPORTED;
    *status = (nvmlGpuP2PStatus_t)p->p2p[index];
    return NVML_SUCCESS;
}

/* Only GPUs that are NUMA nodes themselves (coherent CPU-GPU platforms) have one; a PCIe or SXM
 * GPU on x86 does not: its CPU-side NUMA node is sysfs numa_node of its PCI device. */
EXPORT nvmlReturn_t nvmlDeviceGetNumaNodeId(nvmlDevice_t device, unsigned int *node) {
    DEVICE(d, device, "nvmlDeviceGetNumaNodeId");
    (void)d;
    if (!node) return NVML_ERROR_INVALID_ARGUMENT;
    return NVML_ERROR_NOT_SUPPORTED;
}

/* ---------------------------------------------------------------- compute instances
 *
 * Each MIG device is one compute instance of one GPU instance; what go-nvlib (nvidia-ctk, the
 * device plugin) asks about them to name a MIG device's profile. */

/* Compute slices of each NVML_COMPUTE_INSTANCE_PROFILE_*; 0: a profile these boards lack. */
static const unsigned int ci_profile_slices[NVML_COMPUTE_INSTANCE_PROFILE_COUNT] = {
    [NVML_COMPUTE_INSTANCE_PROFILE_1_SLICE] = 1, [NVML_COMPUTE_INSTANCE_PROFILE_2_SLICE] = 2,
    [NVML_COMPUTE_INSTANCE_PROFILE_3_SLICE] = 3, [NVML_COMPUTE_INSTANCE_PROFILE_4_SLICE] = 4,
    [NVML_COMPUTE_INSTANCE_PROFILE_7_SLICE] = 7, [NVML_COMPUTE_INSTANCE_PROFILE_8_SLICE] = 8,
    [NVML_COMPUTE_INSTANCE_PROFILE_6_SLICE] = 6,
};

static fake_gi_profile *profile_by_id(fake_device *gpu, unsigned int id) {
    for (int i = 0; i < gpu->n_profiles; i++)
        if (gpu->profiles[i].id == id) return &gpu->profiles[i];
    return NULL;
}

/* A GPU instance of `gpu_slices` compute slices offers compute instances of 1..4 slices and
 * of its whole size (a 7-slice GI: 1, 2, 3, 4 and 7). */
static nvmlReturn_t ci_profile(unsigned int profile, unsigned int eng, unsigned int gi_slices,
                               unsigned int *slices) {
    if (profile >= NVML_COMPUTE_INSTANCE_PROFILE_COUNT ||
        eng >= NVML_COMPUTE_INSTANCE_ENGINE_PROFILE_COUNT)
        return NVML_ERROR_INVALID_ARGUMENT;
    *slices = ci_profile_slices[profile];
    if (!*slices || *slices > gi_slices || (*slices > 4 && *slices != gi_slices))
        return NVML_ERROR_NOT_SUPPORTED;
    return NVML_SUCCESS;
}

static unsigned int ci_profile_of(unsigned int slices) {
    for (unsigned int i = 0; i < NVML_COMPUTE_INSTANCE_PROFILE_COUNT; i++)
        if (ci_profile_slices[i] == slices) return i;
    return NVML_COMPUTE_INSTANCE_PROFILE_COUNT;
}

/* The fields the v1, v2 and v3 compute-instance profile structs share. */
#define FILL_CI_PROFILE(info, profile, slices, p)                             \
    do {                                                                  \
        (info)->id = (profile);                                           \
        (info)->sliceCount = (slices);                                    \
        (info)->instanceCount = (p)->slices / (slices);                   \
        (info)->multiprocessorCount = (p)->sms * (slices) / (p)->slices;  \
        (info)->sharedCopyEngineCount = (p)->ce;                          \
        (info)->sharedDecoderCount = (p)->dec;                            \
        (info)->sharedEncoderCount = (p)->enc;                            \
        (info)->sharedJpegCount = (p)->jpeg;                              \
        (info)->sharedOfaCount = (p)->ofa;                                \
    } while (0)

/* The GPU instance and its profile, or NULL for a handle we did not hand out. */
static fake_gi *gi_and_profile(nvmlGpuInstance_t instance, fake_gi_profile **p) {
    fake_gi *gi = as_gi(instance);
    if (!gi) return NULL;
    *p = profile_by_id(T.gpus[gi->gpu], gi->profile_id);
    return *p ? gi : NULL;
}

/* The GI's profile and the CI profile's slices, after the checks both entry points share. */
static nvmlReturn_t ci_profile_query(nvmlGpuInstance_t instance, unsigned int profile,
                                     unsigned int eng, const void *info, fake_gi_profile **p,
                                     unsigned int *slices) {
    CHECK_INIT();
    fake_gi *gi = gi_and_profile(instance, p);
    if (!gi || !info) return NVML_ERROR_INVALID_ARGUMENT;
    INJECT("nvmlGpuInstanceGetComputeInstanceProfileInfo", gi->gpu, -1);
    return ci_profile(profile, eng, (*p)->slices, slices);
}

EXPORT nvmlReturn_t nvmlGpuInstanceGetComputeInstanceProfileInfo(
    nvmlGpuInstance_t instance, unsigned int profile, unsigned int eng,
    nvmlComputeInstanceProfileInfo_t *info) {
    fake_gi_profile *p;
    unsigned int slices;
    nvmlReturn_t ret = ci_profile_query(instance, profile, eng, info, &p, &slices);
    if (ret != NVML_SUCCESS) return ret;
    FILL_CI_PROFILE(info, profile, slices, p);
    return NVML_SUCCESS;
}

EXPORT nvmlReturn_t nvmlGpuInstanceGetComputeInstanceProfileInfoV(
    nvmlGpuInstance_t instance, unsigned int profile, unsigned int eng,
    nvmlComputeInstanceProfileInfo_v2_t *info) {
    fake_gi_profile *p;
    unsigned int slices;
    nvmlReturn_t ret = ci_profile_query(instance, profile, eng, info, &p, &slices);
    if (ret != NVML_SUCCESS) return ret;
    /* "MIG 3g.20gb" for a CI as large as its GI, "MIG 1c.3g.20gb" for a smaller one */
    const char *gi_name = strncmp(p->name, "MIG ", 4) == 0 ? p->name + 4 : p->name;
    char name[NVML_DEVICE_NAME_V2_BUFFER_SIZE];
    if (slices == p->slices) snprintf(name, sizeof name, "MIG %.64s", gi_name);
    else snprintf(name, sizeof name, "MIG %uc.%.64s", slices, gi_name);
    if (info->version == nvmlComputeInstanceProfileInfo_v2) {
        FILL_CI_PROFILE(info, profile, slices, p);
        copy_str(info->name, sizeof info->name, name);
        return NVML_SUCCESS;
    }
    if (info->version == nvmlComputeInstanceProfileInfo_v3) {
        nvmlComputeInstanceProfileInfo_v3_t *v3 = (nvmlComputeInstanceProfileInfo_v3_t *)info;
        FILL_CI_PROFILE(v3, profile, slices, p);
        copy_str(v3->name, sizeof v3->name, name);
        v3->capabilities = 0;
        return NVML_SUCCESS;
    }
    return NVML_ERROR_ARGUMENT_VERSION_MISMATCH;
}

EXPORT nvmlReturn_t nvmlGpuInstanceGetComputeInstanceById(nvmlGpuInstance_t instance,
                                                          unsigned int id,
                                                          nvmlComputeInstance_t *ci) {
    CHECK_INIT();
    fake_gi *gi = as_gi(instance);
    if (!gi || !ci) return NVML_ERROR_INVALID_ARGUMENT;
    INJECT("nvmlGpuInstanceGetComputeInstanceById", gi->gpu, -1);
    fake_device *gpu = T.gpus[gi->gpu];
    for (int i = 0; i < gpu->n_migs; i++) {
        fake_device *m = gpu->migs[i];
        if (m->gi_id == gi->id && m->ci_id == id) {
            *ci = (nvmlComputeInstance_t)&m->ci_magic;
            return NVML_SUCCESS;
        }
    }
    return NVML_ERROR_NOT_FOUND;
}

/* The MIG device whose compute instance handle this is. */
static fake_device *as_ci(nvmlComputeInstance_t h) {
    for (int i = 0; i < T.n_gpus; i++)
        for (int j = 0; j < T.gpus[i]->n_migs; j++)
            if ((nvmlComputeInstance_t)&T.gpus[i]->migs[j]->ci_magic == h) return T.gpus[i]->migs[j];
    return NULL;
}

static nvmlReturn_t ci_info(nvmlComputeInstance_t ci, nvmlComputeInstanceInfo_t *info) {
    CHECK_INIT();
    fake_device *m = as_ci(ci);
    if (!m || !info) return NVML_ERROR_INVALID_ARGUMENT;
    INJECT("nvmlComputeInstanceGetInfo", m->gpu, m->mig_index);
    fake_device *gpu = T.gpus[m->gpu];
    memset(info, 0, sizeof *info);
    for (int i = 0; i < gpu->n_gis; i++)
        if (gpu->gis[i].id == m->gi_id) info->gpuInstance = (nvmlGpuInstance_t)&gpu->gis[i];
    info->device = (nvmlDevice_t)gpu;
    info->id = m->ci_id;
    info->profileId = ci_profile_of(m->ci_slices);
    info->placement.start = m->ci_start;
    info->placement.size = m->ci_slices;
    return NVML_SUCCESS;
}
EXPORT nvmlReturn_t nvmlComputeInstanceGetInfo_v2(nvmlComputeInstance_t ci,
                                                  nvmlComputeInstanceInfo_t *info) {
    return ci_info(ci, info);
}
EXPORT nvmlReturn_t nvmlComputeInstanceGetInfo(nvmlComputeInstance_t ci,
                                               nvmlComputeInstanceInfo_t *info) {
    return ci_info(ci, info);
}

/* Engines and sizes of a MIG device: NVML answers for MIG device handles only. */
static nvmlReturn_t attributes(nvmlDevice_t device, nvmlDeviceAttributes_t *a) {
    DEVICE(m, device, "nvmlDeviceGetAttributes");
    if (!a) return NVML_ERROR_INVALID_ARGUMENT;
    if (m->kind != KIND_MIG) return NVML_ERROR_NOT_SUPPORTED;
    fake_device *gpu = T.gpus[m->gpu];
    fake_gi_profile *p = NULL;
    for (int i = 0; i < gpu->n_gis && !p; i++)
        if (gpu->gis[i].id == m->gi_id) p = profile_by_id(gpu, gpu->gis[i].profile_id);
    if (!p) return NVML_ERROR_UNKNOWN;
    memset(a, 0, sizeof *a);
    a->multiprocessorCount = p->sms * m->ci_slices / p->slices;
    a->sharedCopyEngineCount = p->ce;
    a->sharedDecoderCount = p->dec;
    a->sharedEncoderCount = p->enc;
    a->sharedJpegCount = p->jpeg;
    a->sharedOfaCount = p->ofa;
    a->gpuInstanceSliceCount = p->slices;
    a->computeInstanceSliceCount = m->ci_slices;
    a->memorySizeMB = p->mem_mb;
    return NVML_SUCCESS;
}
EXPORT nvmlReturn_t nvmlDeviceGetAttributes_v2(nvmlDevice_t device, nvmlDeviceAttributes_t *a) {
    return attributes(device, a);
}
EXPORT nvmlReturn_t nvmlDeviceGetAttributes(nvmlDevice_t device, nvmlDeviceAttributes_t *a) {
    return attributes(device, a);
}
