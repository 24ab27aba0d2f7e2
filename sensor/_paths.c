/* The judge's path syscalls, called without letting go of the GIL: statx of each name it
 * resolves through a directory found canonical (one per open), realpath(3) of the others.
 *
 * Through os.lstat, each stat let go of the GIL and woke the daemon's other threads waiting for
 * it, mostly to find it taken again; through ctypes, converting the arguments and the result
 * cost twice the stat itself (3.1 us against 1.5 us here). sensor/processes.py calls them. */

#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <fcntl.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>

static PyTypeObject *file_stat_type;

static PyStructSequence_Field file_stat_fields[] = {
    {"st_dev", NULL}, {"st_ino", NULL}, {"st_nlink", NULL}, {"st_mode", NULL}, {NULL, NULL},
};

static PyStructSequence_Desc file_stat_desc = {
    "sensor._paths.FileStat", "The fields of a stat the process table reads.", file_stat_fields, 4,
};

/* lstat(path) -> FileStat; OSError (FileNotFoundError, ...) naming the path. */
static PyObject *paths_lstat(PyObject *self, PyObject *path)
{
    PyObject *encoded, *result;
    struct statx st;
    int rc;

    if (!PyUnicode_FSConverter(path, &encoded)) /* os.fsencode: surrogateescape keeps every byte */
        return NULL;
    rc = statx(AT_FDCWD, PyBytes_AS_STRING(encoded), AT_SYMLINK_NOFOLLOW, STATX_BASIC_STATS, &st);
    Py_DECREF(encoded);
    if (rc != 0)
        return PyErr_SetFromErrnoWithFilenameObject(PyExc_OSError, path);
    result = PyStructSequence_New(file_stat_type);
    if (result == NULL)
        return NULL;
    PyStructSequence_SET_ITEM(result, 0, PyLong_FromUnsignedLongLong(makedev(st.stx_dev_major, st.stx_dev_minor)));
    PyStructSequence_SET_ITEM(result, 1, PyLong_FromUnsignedLongLong(st.stx_ino));
    PyStructSequence_SET_ITEM(result, 2, PyLong_FromUnsignedLong(st.stx_nlink));
    PyStructSequence_SET_ITEM(result, 3, PyLong_FromUnsignedLong(st.stx_mode));
    if (PyErr_Occurred()) {
        Py_DECREF(result);
        return NULL;
    }
    return result;
}

/* realpath(path) -> the canonical path, or None when realpath(3) fails (a missing name on the
 * way: Python's os.path.realpath then resolves what exists and keeps the rest). */
static PyObject *paths_realpath(PyObject *self, PyObject *path)
{
    PyObject *encoded, *result;
    char *found;

    if (!PyUnicode_FSConverter(path, &encoded))
        return NULL;
    found = realpath(PyBytes_AS_STRING(encoded), NULL);
    Py_DECREF(encoded);
    if (found == NULL)
        Py_RETURN_NONE;
    result = PyUnicode_DecodeFSDefault(found);
    free(found);
    return result;
}

static PyMethodDef paths_methods[] = {
    {"lstat", paths_lstat, METH_O, "os.lstat's device, inode, link count and mode, holding the GIL."},
    {"realpath", paths_realpath, METH_O, "realpath(3), holding the GIL; None if it fails."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef paths_module = {
    PyModuleDef_HEAD_INIT, "sensor._paths", "Path syscalls of the judge, holding the GIL.", -1, paths_methods,
};

PyMODINIT_FUNC PyInit__paths(void)
{
    PyObject *module = PyModule_Create(&paths_module);

    if (module == NULL)
        return NULL;
    file_stat_type = PyStructSequence_NewType(&file_stat_desc);
    if (file_stat_type == NULL || PyModule_AddObjectRef(module, "FileStat", (PyObject *)file_stat_type) < 0) {
        Py_DECREF(module);
        return NULL;
    }
    return module;
}
