/* The judge's path syscalls, called without letting go of the GIL: a name in a directory found
 * canonical (one per open of most agents) resolved to its Target with one statx, realpath(3) of
 * the others.
 *
 * Through os.lstat, each stat let go of the GIL and woke the daemon's other threads waiting for
 * it, mostly to find it taken again; through ctypes, converting the arguments and the result
 * cost twice the stat itself (3.1 us against 1.5 us here). The lookup around the stat and the
 * Target it makes cost the judge another microsecond in Python. sensor/processes.py calls them. */

#include "_named_tuple.h"
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>

/* Set once by set_types: correlate.Target, what known_name builds. */
static PyTypeObject *target_type;

#define TARGET_FIELDS 6 /* literal, canonical, resolved, file_id, links, is_dir */

static PyObject *set_types(PyObject *self, PyObject *target)
{
	if (named_tuple_fields(target) != TARGET_FIELDS)
		return PyErr_Format(PyExc_TypeError, "set_types: Target must be a named tuple of %d fields, "
				    "as sensor/_paths.c builds it", TARGET_FIELDS);
	Py_XSETREF(target_type, (PyTypeObject *)Py_NewRef(target));
	Py_RETURN_NONE;
}

/* Whether dirs (processes.CanonicalDirs: directory -> (names_gen, expiry ktime)) has an entry for
 * the directory of `absolute` that stands at (names_gen, now_ns), and the name in it is one a
 * directory entry can settle (not "", "." or ".."): 1 yes, 0 no, -1 an error. */
static int known_directory(PyObject *dirs, PyObject *absolute, unsigned long long names_gen,
			   unsigned long long now_ns)
{
	Py_ssize_t length = PyUnicode_GET_LENGTH(absolute), slash;
	PyObject *directory, *entry;
	unsigned long long generation, expiry;
	int kind = PyUnicode_KIND(absolute);
	const void *data = PyUnicode_DATA(absolute);

	slash = PyUnicode_FindChar(absolute, '/', 0, length, -1);
	if (slash < 0 || slash == length - 1)
		return slash == -2 ? -1 : 0;
	if (PyUnicode_READ(kind, data, slash + 1) == '.' &&
	    (slash + 2 == length || (PyUnicode_READ(kind, data, slash + 2) == '.' && slash + 3 == length)))
		return 0;
	directory = slash ? PyUnicode_Substring(absolute, 0, slash) : PyUnicode_FromString("/");
	if (directory == NULL)
		return -1;
	entry = PyDict_GetItemWithError(dirs, directory);
	Py_DECREF(directory);
	if (entry == NULL)
		return PyErr_Occurred() ? -1 : 0;
	if (!PyTuple_Check(entry) || PyTuple_GET_SIZE(entry) != 2) {
		PyErr_SetString(PyExc_TypeError, "known_name: a directory's entry is (names_gen, expiry)");
		return -1;
	}
	generation = PyLong_AsUnsignedLongLong(PyTuple_GET_ITEM(entry, 0));
	expiry = PyLong_AsUnsignedLongLong(PyTuple_GET_ITEM(entry, 1));
	if (PyErr_Occurred())
		return -1;
	return generation == names_gen && now_ns <= expiry;
}

/* known_name(dirs, literal, absolute, names_gen, now_ns) -> Target | None
 * The Target of a name in a directory found canonical, from one statx of the name as the agent
 * spelled it (its identity always read fresh): canonical is `absolute`, and a missing file has
 * no identity. None: resolve it the long way (no standing entry, the name is a symlink, or the
 * stat failed otherwise than with ENOENT). */
static PyObject *known_name(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
	PyObject *dirs, *literal, *absolute, *encoded, *t;
	unsigned long long names_gen, now_ns;
	struct statx st;
	int known, rc, missing;

	if (target_type == NULL)
		return PyErr_Format(PyExc_RuntimeError, "sensor._paths.set_types was not called");
	if (nargs != 5 || !PyDict_Check(args[0]) || !PyUnicode_Check(args[1]) || !PyUnicode_Check(args[2]))
		return PyErr_Format(PyExc_TypeError, "known_name(dirs: dict, literal: str, absolute: str, names_gen, now_ns)");
	dirs = args[0];
	literal = args[1];
	absolute = args[2];
	names_gen = PyLong_AsUnsignedLongLong(args[3]);
	now_ns = PyLong_AsUnsignedLongLong(args[4]);
	if (PyErr_Occurred())
		return NULL;
	known = known_directory(dirs, absolute, names_gen, now_ns);
	if (known <= 0)
		return known < 0 ? NULL : Py_NewRef(Py_None);
	if (!PyUnicode_FSConverter(absolute, &encoded)) /* os.fsencode: surrogateescape keeps every byte */
		return NULL;
	rc = statx(AT_FDCWD, PyBytes_AS_STRING(encoded), AT_SYMLINK_NOFOLLOW, STATX_BASIC_STATS, &st);
	Py_DECREF(encoded);
	missing = rc != 0 && errno == ENOENT;
	if ((rc != 0 && !missing) || (rc == 0 && S_ISLNK(st.stx_mode)))
		Py_RETURN_NONE;
	t = target_type->tp_alloc(target_type, TARGET_FIELDS);
	if (t == NULL)
		return NULL;
	PUT(t, 0, Py_NewRef(literal));
	PUT(t, 1, Py_NewRef(absolute));
	PUT(t, 2, Py_NewRef(Py_True));
	PUT(t, 3, missing ? Py_NewRef(Py_None)
			  : Py_BuildValue("(KK)", (unsigned long long)makedev(st.stx_dev_major, st.stx_dev_minor),
					  (unsigned long long)st.stx_ino));
	PUT(t, 4, PyLong_FromUnsignedLong(missing ? 1 : st.stx_nlink));
	PUT(t, 5, PyBool_FromLong(!missing && S_ISDIR(st.stx_mode)));
	return t;
fail:
	Py_DECREF(t);
	return NULL;
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
	{"set_types", set_types, METH_O, "set_types(Target): what known_name builds"},
	{"known_name", (PyCFunction)(void (*)(void))known_name, METH_FASTCALL,
	 "known_name(dirs, literal, absolute, names_gen, now_ns) -> Target | None, holding the GIL."},
	{"realpath", paths_realpath, METH_O, "realpath(3), holding the GIL; None if it fails."},
	{NULL, NULL, 0, NULL},
};

static struct PyModuleDef paths_module = {
    PyModuleDef_HEAD_INIT, "sensor._paths", "Path syscalls of the judge, holding the GIL.", -1, paths_methods,
};

PyMODINIT_FUNC PyInit__paths(void)
{
	return PyModule_Create(&paths_module);
}
