/* A SIGBUS guard for the shared segment's mapping (fleet/mapguard.py is its Python side).
 *
 * When the same user truncates a mapped file (`truncate -s 0 /dev/shm/rrlb3.*`, `: >` ...), the
 * kernel drops its pages from every mapping, and the next access to them is a SIGBUS whose
 * default action kills the process with every call in flight. Python cannot handle that signal
 * itself: its C-level handler only sets a flag and returns, and the faulting access runs again.
 *
 * This handler does what Wayland compositors do for their clients' shared-memory pools
 * (libwayland-server, wl_shm.c): if the faulting address lies in a guarded region, it maps
 * anonymous zero pages over the whole region (MAP_FIXED, so the addresses stay valid), records
 * that the region tripped, and returns; the access is retried on the zero pages and succeeds.
 * The library then sees an impossible state (a zero publish word after a table) or the trip
 * flag, and fail-soft takes this process off the shared segment (fleet/failsoft.py). Faults
 * outside every guarded region, and SIGBUS sent by kill/raise, go to the previous handler or
 * to the default action, exactly as without the guard.
 *
 * mmap(2) is not on POSIX's async-signal-safe list, but on Linux it is a plain system call;
 * the region table is read with atomic loads only.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <signal.h>
#include <stdint.h>
#include <string.h>
#include <sys/mman.h>

#define MAX_REGIONS 64

typedef struct {
    uintptr_t start; /* 0: free slot */
    size_t length;
    int tripped;
} region_t;

static region_t regions[MAX_REGIONS];
static struct sigaction previous; /* the disposition we were installed over */
static int have_previous;

static volatile sig_atomic_t chaining; /* inside the previous handler: no second round */

static void
to_default(int sig, siginfo_t *info)
{
    /* a real fault retries the access and dies of it; a sent signal is raised again */
    struct sigaction dfl;
    memset(&dfl, 0, sizeof dfl);
    dfl.sa_handler = SIG_DFL;
    sigemptyset(&dfl.sa_mask);
    sigaction(sig, &dfl, NULL);
    if (info == NULL || info->si_code <= 0)
        raise(sig);
}

static void
chain(int sig, siginfo_t *info, void *context)
{
    /* A previous handler may re-install its own predecessor -- us, when we were put back on
       top of it (faulthandler does that, then raises again): the second round goes to the
       default action instead of back and forth between the two handlers. */
    if (chaining || !have_previous) {
        to_default(sig, info);
        return;
    }
    chaining = 1;
    if ((previous.sa_flags & SA_SIGINFO) && previous.sa_sigaction != NULL)
        previous.sa_sigaction(sig, info, context);
    else if (!(previous.sa_flags & SA_SIGINFO) && previous.sa_handler != SIG_DFL
             && previous.sa_handler != SIG_IGN)
        previous.sa_handler(sig);
    else
        to_default(sig, info);
    chaining = 0;
}

static void
on_sigbus(int sig, siginfo_t *info, void *context)
{
    if (info != NULL && info->si_code > 0) { /* raised by the kernel for a memory access */
        uintptr_t addr = (uintptr_t)info->si_addr;
        for (int i = 0; i < MAX_REGIONS; i++) {
            uintptr_t start = __atomic_load_n(&regions[i].start, __ATOMIC_ACQUIRE);
            size_t length = __atomic_load_n(&regions[i].length, __ATOMIC_ACQUIRE);
            if (start != 0 && addr >= start && addr - start < length) {
                void *p = mmap((void *)start, length, PROT_READ | PROT_WRITE,
                               MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED, -1, 0);
                if (p != MAP_FAILED) {
                    __atomic_store_n(&regions[i].tripped, 1, __ATOMIC_RELEASE);
                    return; /* the access is retried on zero pages */
                }
                break;
            }
        }
    }
    chain(sig, info, context);
}

/* install() -> None: put the handler on top (again, if someone replaced it since). */
static PyObject *
install(PyObject *self, PyObject *unused)
{
    struct sigaction current;
    if (sigaction(SIGBUS, NULL, &current) != 0)
        return PyErr_SetFromErrno(PyExc_OSError);
    if ((current.sa_flags & SA_SIGINFO) && current.sa_sigaction == on_sigbus)
        Py_RETURN_NONE;
    struct sigaction ours;
    memset(&ours, 0, sizeof ours);
    ours.sa_sigaction = on_sigbus;
    ours.sa_flags = SA_SIGINFO | SA_NODEFER | SA_ONSTACK;
    sigemptyset(&ours.sa_mask);
    previous = current;
    have_previous = 1;
    if (sigaction(SIGBUS, &ours, NULL) != 0)
        return PyErr_SetFromErrno(PyExc_OSError);
    Py_RETURN_NONE;
}

/* guard(buffer) -> slot: guard the memory of a buffer (an mmap), or raise. */
static PyObject *
guard(PyObject *self, PyObject *arg)
{
    Py_buffer view;
    if (PyObject_GetBuffer(arg, &view, PyBUF_SIMPLE) < 0)
        return NULL;
    uintptr_t start = (uintptr_t)view.buf;
    size_t length = (size_t)view.len;
    PyBuffer_Release(&view); /* the caller keeps the mapping alive while guarded */
    if (start == 0 || length == 0) {
        PyErr_SetString(PyExc_ValueError, "empty buffer");
        return NULL;
    }
    for (int i = 0; i < MAX_REGIONS; i++) {
        if (__atomic_load_n(&regions[i].start, __ATOMIC_ACQUIRE) == 0) {
            __atomic_store_n(&regions[i].tripped, 0, __ATOMIC_RELEASE);
            __atomic_store_n(&regions[i].length, length, __ATOMIC_RELEASE);
            __atomic_store_n(&regions[i].start, start, __ATOMIC_RELEASE);
            return PyLong_FromLong(i);
        }
    }
    PyErr_SetString(PyExc_RuntimeError, "too many guarded mappings");
    return NULL;
}

static int
slot_of(PyObject *arg)
{
    long i = PyLong_AsLong(arg);
    if (i == -1 && PyErr_Occurred())
        return -1;
    if (i < 0 || i >= MAX_REGIONS) {
        PyErr_SetString(PyExc_ValueError, "no such slot");
        return -1;
    }
    return (int)i;
}

/* unguard(slot[, weakref]) -> None: the mapping is going away. Also usable directly as a
   weakref callback (through functools.partial): no Python bytecode runs on that path, so a
   KeyboardInterrupt can never be raised inside it and dropped. */
static PyObject *
unguard(PyObject *self, PyObject *args)
{
    PyObject *slot, *ignored = NULL;
    if (!PyArg_UnpackTuple(args, "unguard", 1, 2, &slot, &ignored))
        return NULL;
    int i = slot_of(slot);
    if (i < 0)
        return NULL;
    __atomic_store_n(&regions[i].start, 0, __ATOMIC_RELEASE);
    Py_RETURN_NONE;
}

/* tripped(slot) -> bool: a SIGBUS in this region was absorbed (the file was truncated). */
static PyObject *
tripped(PyObject *self, PyObject *arg)
{
    int i = slot_of(arg);
    if (i < 0)
        return NULL;
    return PyBool_FromLong(__atomic_load_n(&regions[i].tripped, __ATOMIC_ACQUIRE));
}

static PyMethodDef methods[] = {
    {"install", install, METH_NOARGS, "Install the SIGBUS handler on top (idempotent)."},
    {"guard", guard, METH_O, "guard(buffer) -> slot; guard a mapping's memory."},
    {"unguard", unguard, METH_VARARGS,
     "unguard(slot[, weakref]); when the mapping goes away (a weakref callback)."},
    {"tripped", tripped, METH_O, "tripped(slot) -> True once a SIGBUS there was absorbed."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "_mapguard",
    "SIGBUS guard for mapped files that may be truncated underneath us.", -1, methods,
};

PyMODINIT_FUNC
PyInit__mapguard(void)
{
    return PyModule_Create(&module);
}
