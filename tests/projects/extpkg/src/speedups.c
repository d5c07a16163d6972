/* nwdemo_ext._speedups: a tiny extension module for the nwcache tests. */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

static PyObject *fib(PyObject *self, PyObject *args) {
    long n;
    if (!PyArg_ParseTuple(args, "l", &n)) {
        return NULL;
    }
    if (n < 0) {
        PyErr_SetString(PyExc_ValueError, "n must not be negative");
        return NULL;
    }
    unsigned long long a = 0, b = 1;
    for (long i = 0; i < n; i++) {
        unsigned long long t = a + b;
        a = b;
        b = t;
    }
    return PyLong_FromUnsignedLongLong(a);
}

static PyObject *greet(PyObject *self, PyObject *args) {
    const char *who;
    if (!PyArg_ParseTuple(args, "s", &who)) {
        return NULL;
    }
    return PyUnicode_FromFormat("hello %s from C", who);
}

static PyMethodDef methods[] = {
    {"fib", fib, METH_VARARGS, "The n-th Fibonacci number."},
    {"greet", greet, METH_VARARGS, "A greeting built in C."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "_speedups", "Small C helpers.", -1, methods,
};

PyMODINIT_FUNC PyInit__speedups(void) {
    return PyModule_Create(&module);
}
