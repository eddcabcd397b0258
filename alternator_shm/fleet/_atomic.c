/* Lock-free 64-bit read-modify-write on addresses inside the shared segment.
 *
 * Optional accelerator of the "atomic" counter backend (fleet/counter.py): the same
 * sequentially consistent operations libatomic's __atomic_fetch_add_8 /
 * __atomic_compare_exchange_8 perform, but as GCC/Clang builtins that compile to one
 * instruction on x86_64 (lock xadd / lock cmpxchg) and aarch64 (ldaddal / casal, or an
 * LL/SC loop), so neither libatomic nor ctypes' per-call argument conversion is needed.
 * Both implementations are truly atomic on the same aligned word, so processes using this
 * module and processes using libatomic may share one segment.
 *
 * The caller passes an address it obtained from a buffer it keeps exported (pinned), aligned
 * to 8 bytes; nothing here checks it.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>

static int
as_u64(PyObject *o, uint64_t *out)
{
    unsigned long long v = PyLong_AsUnsignedLongLongMask(o);
    if (v == (unsigned long long)-1 && PyErr_Occurred())
        return -1;
    *out = (uint64_t)v;
    return 0;
}

static int
as_addr(PyObject *o, uint64_t **out)
{
    void *p = PyLong_AsVoidPtr(o);
    if (p == NULL && PyErr_Occurred())
        return -1;
    if (p == NULL || ((uintptr_t)p & 7u) != 0) {
        PyErr_SetString(PyExc_ValueError, "address must be non-null and 8-byte aligned");
        return -1;
    }
    *out = (uint64_t *)p;
    return 0;
}

/* fetch_add(address, delta) -> previous value (mod 2**64) */
static PyObject *
fetch_add(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    uint64_t *p, delta;
    if (nargs != 2) {
        PyErr_SetString(PyExc_TypeError, "fetch_add(address, delta)");
        return NULL;
    }
    if (as_addr(args[0], &p) < 0 || as_u64(args[1], &delta) < 0)
        return NULL;
    return PyLong_FromUnsignedLongLong(__atomic_fetch_add(p, delta, __ATOMIC_SEQ_CST));
}

/* compare_exchange(address, expected, desired) -> True if stored */
static PyObject *
compare_exchange(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    uint64_t *p, expected, desired;
    if (nargs != 3) {
        PyErr_SetString(PyExc_TypeError, "compare_exchange(address, expected, desired)");
        return NULL;
    }
    if (as_addr(args[0], &p) < 0 || as_u64(args[1], &expected) < 0
        || as_u64(args[2], &desired) < 0)
        return NULL;
    if (__atomic_compare_exchange_n(p, &expected, desired, 0, __ATOMIC_SEQ_CST,
                                    __ATOMIC_SEQ_CST))
        Py_RETURN_TRUE;
    Py_RETURN_FALSE;
}

/* pick(mark, token, publish_addr, publish, version_addr, version, counter_addr, rotation,
 *      pick_addrs) -> index, or -1 having changed nothing
 *
 * Routing's steady-state round-robin pick in one call (fleet/shared.py PickSnapshot): if the
 * fork mark still holds this process's token and the publish word and the health version
 * still hold the values the snapshot was built for, advance the shared counter once, count a
 * pick at pick_addrs[i] and return i = (counter + rotation) mod len(pick_addrs) (computed
 * without overflow: the same value as Python's unbounded sum). Any mismatch returns -1 before
 * anything is written: the caller rebuilds its snapshot in Python. The loads are acquire
 * loads, so a word seen unchanged vouches for the data read after it when the snapshot was
 * built. */
static PyObject *
pick(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    uint64_t *mark, *pub, *ver, *counter, *target, token, publish, version, rotation;
    PyObject *addrs;
    Py_ssize_t size;
    if (nargs != 9 || !PyTuple_Check(args[8])) {
        PyErr_SetString(PyExc_TypeError,
                        "pick(mark, token, publish_addr, publish, version_addr, version, "
                        "counter_addr, rotation, pick_addrs: tuple)");
        return NULL;
    }
    if (as_addr(args[0], &mark) < 0 || as_u64(args[1], &token) < 0
        || as_addr(args[2], &pub) < 0 || as_u64(args[3], &publish) < 0
        || as_addr(args[4], &ver) < 0 || as_u64(args[5], &version) < 0
        || as_addr(args[6], &counter) < 0 || as_u64(args[7], &rotation) < 0)
        return NULL;
    addrs = args[8];
    size = PyTuple_GET_SIZE(addrs);
    if (size == 0) {
        PyErr_SetString(PyExc_ValueError, "pick_addrs must not be empty");
        return NULL;
    }
    if (__atomic_load_n(mark, __ATOMIC_ACQUIRE) != token
        || __atomic_load_n(pub, __ATOMIC_ACQUIRE) != publish
        || __atomic_load_n(ver, __ATOMIC_ACQUIRE) != version)
        return PyLong_FromLong(-1);
    uint64_t n = (uint64_t)size;
    /* pick_addrs are the snapshot builder's own (checked there); the counter add comes
     * first because the target depends on it */
    uint64_t position = __atomic_fetch_add(counter, 1, __ATOMIC_SEQ_CST);
    Py_ssize_t i = (Py_ssize_t)(((position % n) + (rotation % n)) % n);
    if (as_addr(PyTuple_GET_ITEM(addrs, i), &target) < 0)
        return NULL;
    __atomic_fetch_add(target, 1, __ATOMIC_SEQ_CST);
    return PyLong_FromSsize_t(i);
}

/* lock_free() -> True if 8-byte atomics are lock-free on this CPU (no hidden lock) */
static PyObject *
lock_free(PyObject *self, PyObject *unused)
{
    return PyBool_FromLong(__atomic_always_lock_free(sizeof(uint64_t), 0));
}

static PyMethodDef methods[] = {
    {"fetch_add", (PyCFunction)(void (*)(void))fetch_add, METH_FASTCALL,
     "fetch_add(address, delta) -> previous value; seq_cst, mod 2**64."},
    {"compare_exchange", (PyCFunction)(void (*)(void))compare_exchange, METH_FASTCALL,
     "compare_exchange(address, expected, desired) -> bool; seq_cst."},
    {"pick", (PyCFunction)(void (*)(void))pick, METH_FASTCALL,
     "pick(mark, token, publish_addr, publish, version_addr, version, counter_addr, rotation, "
     "pick_addrs) -> index, or -1 (nothing changed) if a word moved."},
    {"lock_free", lock_free, METH_NOARGS,
     "True if 8-byte atomics compile to lock-free instructions here."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "_atomic",
    "Lock-free 64-bit atomics on shared-memory addresses (GCC/Clang __atomic builtins).",
    -1, methods,
};

PyMODINIT_FUNC
PyInit__atomic(void)
{
    return PyModule_Create(&module);
}
