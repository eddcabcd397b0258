/* getpid() answered from memory while this process's fork mark holds (see _forkmark.py).
 *
 * glibc stopped caching getpid() in 2.25, so every os.getpid() is a system call (about 0.2 µs
 * here). The data path asks "am I still the process that built this?" several times per
 * attempt; the kernel already answers it for free: the fork mark is a MADV_WIPEONFORK page that
 * reads zero in every child however it was forked (os.fork, multiprocessing, a fork() from C
 * without Python's at-fork hooks). So the pid is cached beside the token this process stored
 * in the mark, and asked of the kernel again only when the mark no longer holds that token.
 *
 * Every call runs under the GIL and never releases it: the two statics below change together
 * as seen by other threads of the process. A fork copies them, but the child's mark reads zero,
 * so the child asks the kernel and stores a token of its own.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <time.h>
#include <unistd.h>
#if defined(__linux__)
#include <sys/random.h>
#endif

static uint64_t *mark = NULL; /* the fork mark's word; NULL until bind() */
static uint64_t seen = 0;     /* the token the cached pid belongs to (never 0 once set) */
static long cached_pid = -1;

/* A fresh non-zero token for a new process: random, so a reused pid cannot match one. */
static uint64_t
new_token(long pid)
{
    uint64_t t = 0;
#if defined(__linux__)
    if (getrandom(&t, sizeof t, GRND_NONBLOCK) != (ssize_t)sizeof t)
        t = 0;
#endif
    if (t == 0) {
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        t = ((uint64_t)pid << 32) ^ (uint64_t)ts.tv_nsec ^ ((uint64_t)ts.tv_sec << 20)
            ^ (uint64_t)(uintptr_t)&ts;
    }
    return t ? t : 1;
}

/* bind(address): the fork mark's word (8-byte aligned, mapped for the process's life) */
static PyObject *
bind(PyObject *self, PyObject *arg)
{
    void *p = PyLong_AsVoidPtr(arg);
    if (p == NULL && PyErr_Occurred())
        return NULL;
    if (p == NULL || ((uintptr_t)p & 7u) != 0) {
        PyErr_SetString(PyExc_ValueError, "address must be non-null and 8-byte aligned");
        return NULL;
    }
    mark = (uint64_t *)p;
    seen = 0;
    Py_RETURN_NONE;
}

/* getpid() -> this process's id, as os.getpid() */
static PyObject *
cached_getpid(PyObject *self, PyObject *unused)
{
    if (mark == NULL)
        return PyLong_FromLong((long)getpid());
    uint64_t now = __atomic_load_n(mark, __ATOMIC_ACQUIRE);
    if (now != 0 && now == seen)
        return PyLong_FromLong(cached_pid);
    long pid = (long)getpid();
    if (now == 0) { /* a new child: store its token (as _forkmark.token() would) */
        now = new_token(pid);
        __atomic_store_n(mark, now, __ATOMIC_RELEASE);
    }
    cached_pid = pid;
    seen = now;
    return PyLong_FromLong(pid);
}

static PyMethodDef methods[] = {
    {"bind", bind, METH_O, "bind(address): the fork mark's word"},
    {"getpid", cached_getpid, METH_NOARGS,
     "getpid() -> this process's id, asked of the kernel only after a fork"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "_pidcache", "os.getpid() cached under the fork mark.", -1, methods,
};

PyMODINIT_FUNC
PyInit__pidcache(void)
{
    return PyModule_Create(&module);
}
