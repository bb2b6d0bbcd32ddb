/*
 * A fake of the NVML C library (libnvidia-ml.so.1) for tests: the functions pynvml calls, with the
 * same signatures and return codes, answering from a plain-text description of GPUs.
 *
 * nvmlInitWithFlags reads the file named by $FAKE_NVML_CONFIG, and nvmlDeviceGetCount_v2 reads it
 * again when it changed, so a test changes the machine under a running reader by rewriting it. Lines are `key=value`; a line `gpu` starts a GPU.
 *   top level: driver=580.65.06  cuda=13000  init_error=<NVML return code, e.g. 9: driver not loaded>
 *   per GPU:   name, uuid, memory_total, memory_used, memory_reserved (bytes; the driver's own share,
 *              which nvmlDeviceGetMemoryInfo counts as used and its _v2 reports apart; -1: no _v2),
 *              util_gpu, util_memory (percent),
 *              temperature (C), power_mw, limit_mw, min_limit_mw, max_limit_mw, ecc_uncorrected,
 *              mig (0 or 1), power_set (0 ok, 3 not supported, 4 no permission), lost (1: every call
 *              answers GPU_IS_LOST), xids (comma-separated XID events, delivered once each).
 * A numeric value of -1 makes its getter answer NVML_ERROR_NOT_SUPPORTED (as GB10 does for memory).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#define SUCCESS 0
#define ERROR_UNINITIALIZED 1
#define ERROR_INVALID_ARGUMENT 2
#define ERROR_NOT_SUPPORTED 3
#define ERROR_INSUFFICIENT_SIZE 7
#define ERROR_TIMEOUT 10
#define ERROR_GPU_IS_LOST 15
#define MAX_GPUS 16
#define MAX_XIDS 8
#define XID_CRITICAL_ERROR 0x8ULL

typedef struct {
    char name[96], uuid[96];
    long long memory_total, memory_used, memory_reserved, ecc_uncorrected;
    long long util_gpu, util_memory, temperature, power_mw, limit_mw, min_limit_mw, max_limit_mw, mig;
    int power_set, lost, xid_count, xid_next;
    unsigned long long xids[MAX_XIDS];
} gpu_t;

typedef struct { unsigned int gpu, memory; } utilization_t;
typedef struct { unsigned long long total, free, used; } memory_t;
typedef struct { unsigned int version; unsigned long long total, reserved, free, used; } memory_v2_t;
typedef struct {
    gpu_t *device;
    unsigned long long event_type, event_data;
    unsigned int gpu_instance_id, compute_instance_id;
} event_data_t;
typedef struct { int registered[MAX_GPUS]; } event_set_t;

static gpu_t gpus[MAX_GPUS];
static int gpu_count = 0, initialized = 0, init_error = 0, cuda_version = 13000;
static char driver_version[80] = "580.65.06";
static event_set_t the_event_set;
static struct timespec loaded_mtime;

static void set_gpu_field(gpu_t *g, const char *key, const char *value) {
    long long number = atoll(value);
    if (!strcmp(key, "name")) snprintf(g->name, sizeof g->name, "%s", value);
    else if (!strcmp(key, "uuid")) snprintf(g->uuid, sizeof g->uuid, "%s", value);
    else if (!strcmp(key, "memory_total")) g->memory_total = number;
    else if (!strcmp(key, "memory_used")) g->memory_used = number;
    else if (!strcmp(key, "memory_reserved")) g->memory_reserved = number;
    else if (!strcmp(key, "util_gpu")) g->util_gpu = number;
    else if (!strcmp(key, "util_memory")) g->util_memory = number;
    else if (!strcmp(key, "temperature")) g->temperature = number;
    else if (!strcmp(key, "power_mw")) g->power_mw = number;
    else if (!strcmp(key, "limit_mw")) g->limit_mw = number;
    else if (!strcmp(key, "min_limit_mw")) g->min_limit_mw = number;
    else if (!strcmp(key, "max_limit_mw")) g->max_limit_mw = number;
    else if (!strcmp(key, "ecc_uncorrected")) g->ecc_uncorrected = number;
    else if (!strcmp(key, "mig")) g->mig = number;
    else if (!strcmp(key, "power_set")) g->power_set = (int)number;
    else if (!strcmp(key, "lost")) g->lost = (int)number;
    else if (!strcmp(key, "xids")) {
        char copy[256];
        snprintf(copy, sizeof copy, "%s", value);
        for (char *part = strtok(copy, ","); part && g->xid_count < MAX_XIDS; part = strtok(NULL, ","))
            g->xids[g->xid_count++] = strtoull(part, NULL, 10);
    }
}

static void load_config(void) {
    gpu_count = 0;
    init_error = 0;
    memset(gpus, 0, sizeof gpus);
    memset(&the_event_set, 0, sizeof the_event_set);
    const char *path = getenv("FAKE_NVML_CONFIG");
    FILE *file = path ? fopen(path, "r") : NULL;
    if (!file) return;
    struct stat info;
    if (fstat(fileno(file), &info) == 0) loaded_mtime = info.st_mtim;
    char line[512];
    while (fgets(line, sizeof line, file)) {
        line[strcspn(line, "\r\n")] = 0;
        if (!strcmp(line, "gpu")) {
            if (gpu_count < MAX_GPUS) gpu_count++;
            continue;
        }
        char *equals = strchr(line, '=');
        if (!equals) continue;
        *equals = 0;
        const char *key = line, *value = equals + 1;
        if (gpu_count > 0) set_gpu_field(&gpus[gpu_count - 1], key, value);
        else if (!strcmp(key, "driver")) snprintf(driver_version, sizeof driver_version, "%s", value);
        else if (!strcmp(key, "cuda")) cuda_version = atoi(value);
        else if (!strcmp(key, "init_error")) init_error = atoi(value);
    }
    fclose(file);
}

/* Every device call starts here: NVML answers UNINITIALIZED before init and GPU_IS_LOST for a lost GPU. */
static int check(gpu_t *g) {
    if (!initialized) return ERROR_UNINITIALIZED;
    if (g < gpus || g >= gpus + gpu_count) return ERROR_INVALID_ARGUMENT;
    return g->lost ? ERROR_GPU_IS_LOST : SUCCESS;
}

static int copy_string(char *out, unsigned int length, const char *value) {
    if (strlen(value) + 1 > length) return ERROR_INSUFFICIENT_SIZE;
    strcpy(out, value);
    return SUCCESS;
}

static int unsigned_value(long long value, unsigned int *out) {
    if (value < 0) return ERROR_NOT_SUPPORTED;
    *out = (unsigned int)value;
    return SUCCESS;
}

int nvmlInitWithFlags(unsigned int flags) {
    (void)flags;
    load_config();
    if (init_error) return init_error;
    initialized = 1;
    return SUCCESS;
}

int nvmlInit_v2(void) { return nvmlInitWithFlags(0); }

int nvmlShutdown(void) {
    if (!initialized) return ERROR_UNINITIALIZED;
    initialized = 0;
    return SUCCESS;
}

int nvmlSystemGetDriverVersion(char *version, unsigned int length) {
    return initialized ? copy_string(version, length, driver_version) : ERROR_UNINITIALIZED;
}

int nvmlSystemGetCudaDriverVersion(int *version) {
    *version = cuda_version;
    return SUCCESS;
}

/* Reload when the file changed since it was read (its registered XID events start over). */
static void reload_if_changed(void) {
    const char *path = getenv("FAKE_NVML_CONFIG");
    struct stat info;
    if (!path || stat(path, &info) != 0) return;
    if (info.st_mtim.tv_sec != loaded_mtime.tv_sec || info.st_mtim.tv_nsec != loaded_mtime.tv_nsec) {
        event_set_t registered = the_event_set;
        load_config();
        the_event_set = registered;
    }
}

int nvmlDeviceGetCount_v2(unsigned int *count) {
    if (!initialized) return ERROR_UNINITIALIZED;
    reload_if_changed();
    *count = (unsigned int)gpu_count;
    return SUCCESS;
}

int nvmlDeviceGetHandleByIndex_v2(unsigned int index, gpu_t **device) {
    if (!initialized) return ERROR_UNINITIALIZED;
    if (index >= (unsigned int)gpu_count) return ERROR_INVALID_ARGUMENT;
    *device = &gpus[index];
    return SUCCESS;
}

int nvmlDeviceGetName(gpu_t *g, char *name, unsigned int length) {
    int status = check(g);
    return status ? status : copy_string(name, length, g->name);
}

int nvmlDeviceGetUUID(gpu_t *g, char *uuid, unsigned int length) {
    int status = check(g);
    return status ? status : copy_string(uuid, length, g->uuid);
}

int nvmlDeviceGetMemoryInfo(gpu_t *g, memory_t *memory) {
    int status = check(g);
    if (status) return status;
    if (g->memory_total < 0) return ERROR_NOT_SUPPORTED;
    memory->total = (unsigned long long)g->memory_total;
    memory->used = (unsigned long long)(g->memory_used + (g->memory_reserved > 0 ? g->memory_reserved : 0));
    memory->free = memory->total - memory->used;
    return SUCCESS;
}

int nvmlDeviceGetMemoryInfo_v2(gpu_t *g, memory_v2_t *memory) {
    int status = check(g);
    if (status) return status;
    if (g->memory_total < 0 || g->memory_reserved < 0) return ERROR_NOT_SUPPORTED;
    memory->total = (unsigned long long)g->memory_total;
    memory->reserved = (unsigned long long)g->memory_reserved;
    memory->used = (unsigned long long)g->memory_used;
    memory->free = memory->total - memory->reserved - memory->used;
    return SUCCESS;
}

int nvmlDeviceGetUtilizationRates(gpu_t *g, utilization_t *utilization) {
    int status = check(g);
    if (status) return status;
    if (g->util_gpu < 0) return ERROR_NOT_SUPPORTED;
    utilization->gpu = (unsigned int)g->util_gpu;
    utilization->memory = (unsigned int)(g->util_memory < 0 ? 0 : g->util_memory);
    return SUCCESS;
}

int nvmlDeviceGetTemperature(gpu_t *g, int sensor, unsigned int *temperature) {
    int status = check(g);
    if (status) return status;
    return sensor == 0 ? unsigned_value(g->temperature, temperature) : ERROR_INVALID_ARGUMENT;
}

int nvmlDeviceGetPowerUsage(gpu_t *g, unsigned int *milliwatts) {
    int status = check(g);
    return status ? status : unsigned_value(g->power_mw, milliwatts);
}

int nvmlDeviceGetEnforcedPowerLimit(gpu_t *g, unsigned int *milliwatts) {
    int status = check(g);
    return status ? status : unsigned_value(g->limit_mw, milliwatts);
}

int nvmlDeviceGetPowerManagementLimitConstraints(gpu_t *g, unsigned int *low, unsigned int *high) {
    int status = check(g);
    if (status) return status;
    if (g->min_limit_mw < 0 || g->max_limit_mw < 0) return ERROR_NOT_SUPPORTED;
    *low = (unsigned int)g->min_limit_mw;
    *high = (unsigned int)g->max_limit_mw;
    return SUCCESS;
}

int nvmlDeviceSetPowerManagementLimit(gpu_t *g, unsigned int milliwatts) {
    int status = check(g);
    if (status) return status;
    if (g->power_set) return g->power_set;
    if (milliwatts < g->min_limit_mw || milliwatts > g->max_limit_mw) return ERROR_INVALID_ARGUMENT;
    g->limit_mw = milliwatts;
    return SUCCESS;
}

int nvmlDeviceGetTotalEccErrors(gpu_t *g, int error_type, int counter_type, unsigned long long *count) {
    (void)error_type;
    (void)counter_type;
    int status = check(g);
    if (status) return status;
    if (g->ecc_uncorrected < 0) return ERROR_NOT_SUPPORTED;
    *count = (unsigned long long)g->ecc_uncorrected;
    return SUCCESS;
}

int nvmlDeviceGetMigMode(gpu_t *g, unsigned int *current, unsigned int *pending) {
    int status = check(g);
    if (status) return status;
    if (g->mig < 0) return ERROR_NOT_SUPPORTED;
    *current = *pending = (unsigned int)g->mig;
    return SUCCESS;
}

int nvmlEventSetCreate(event_set_t **set) {
    if (!initialized) return ERROR_UNINITIALIZED;
    *set = &the_event_set;
    return SUCCESS;
}

int nvmlDeviceRegisterEvents(gpu_t *g, unsigned long long types, event_set_t *set) {
    int status = check(g);
    if (status) return status;
    if (types & XID_CRITICAL_ERROR) set->registered[g - gpus] = 1;
    return SUCCESS;
}

/* Delivers each configured XID once, then times out at once (tests never wait). */
int nvmlEventSetWait_v2(event_set_t *set, event_data_t *data, unsigned int timeout_ms) {
    (void)timeout_ms;
    if (!initialized) return ERROR_UNINITIALIZED;
    for (int i = 0; i < gpu_count; i++) {
        gpu_t *g = &gpus[i];
        if (set->registered[i] && g->xid_next < g->xid_count) {
            memset(data, 0, sizeof *data);
            data->device = g;
            data->event_type = XID_CRITICAL_ERROR;
            data->event_data = g->xids[g->xid_next++];
            return SUCCESS;
        }
    }
    return ERROR_TIMEOUT;
}

int nvmlEventSetFree(event_set_t *set) {
    (void)set;
    return initialized ? SUCCESS : ERROR_UNINITIALIZED;
}
