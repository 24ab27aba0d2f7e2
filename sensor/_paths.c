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
 * the directory of `name` that stands at (names_gen, now_ns), and the name in it is one a
 * directory entry can settle (not "", "." or ".."): 1 yes, 0 no, -1 an error. */
static int known_directory(PyObject *dirs, PyObject *name, unsigned long long names_gen,
			   unsigned long long now_ns)
{
	Py_ssize_t length = PyUnicode_GET_LENGTH(name), slash;
	PyObject *directory, *entry;
	unsigned long long generation, expiry;
	int kind = PyUnicode_KIND(name);
	const void *data = PyUnicode_DATA(name);

	slash = PyUnicode_FindChar(name, '/', 0, length, -1);
	if (slash < 0 || slash == length - 1)
		return slash == -2 ? -1 : 0;
	if (PyUnicode_READ(kind, data, slash + 1) == '.' &&
	    (slash + 2 == length || (PyUnicode_READ(kind, data, slash + 2) == '.' && slash + 3 == length)))
		return 0;
	directory = slash ? PyUnicode_Substring(name, 0, slash) : PyUnicode_FromString("/");
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

/* known_name(dirs, name, names_gen, now_ns) -> Target | None
 * The Target of a name in a directory found canonical, from one statx of the name as the agent
 * spelled it (its identity always read fresh): literal and canonical are `name`, and a missing
 * file has no identity. None: resolve it the long way (no standing entry, the name is a symlink,
 * `.`, `..` or empty, or the stat failed otherwise than with ENOENT). */
static PyObject *known_name(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
	PyObject *dirs, *name, *encoded, *t;
	unsigned long long names_gen, now_ns;
	struct statx st;
	int known, rc, missing;

	if (target_type == NULL)
		return PyErr_Format(PyExc_RuntimeError, "sensor._paths.set_types was not called");
	if (nargs != 4 || !PyDict_Check(args[0]) || !PyUnicode_Check(args[1]))
		return PyErr_Format(PyExc_TypeError, "known_name(dirs: dict, name: str, names_gen, now_ns)");
	dirs = args[0];
	name = args[1];
	names_gen = PyLong_AsUnsignedLongLong(args[2]);
	now_ns = PyLong_AsUnsignedLongLong(args[3]);
	if (PyErr_Occurred())
		return NULL;
	known = known_directory(dirs, name, names_gen, now_ns);
	if (known <= 0)
		return known < 0 ? NULL : Py_NewRef(Py_None);
	if (!PyUnicode_FSConverter(name, &encoded)) /* os.fsencode: surrogateescape keeps every byte */
		return NULL;
	rc = statx(AT_FDCWD, PyBytes_AS_STRING(encoded), AT_SYMLINK_NOFOLLOW, STATX_BASIC_STATS, &st);
	Py_DECREF(encoded);
	missing = rc != 0 && errno == ENOENT;
	if ((rc != 0 && !missing) || (rc == 0 && S_ISLNK(st.stx_mode)))
		Py_RETURN_NONE;
	t = target_type->tp_alloc(target_type, TARGET_FIELDS);
	if (t == NULL)
		return NULL;
	PUT(t, 0, Py_NewRef(name));
	PUT(t, 1, Py_NewRef(name));
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

/* Attribute names of profiles.globs._SegmentNode and of a regex match, interned at import. */
static PyObject *str_children, *str_joined, *str_lastindex;

/* Whether the last segment of path (from its last '/') begins with one of beginnings (a tuple
 * of str): 1, 0, or -1 with an exception set. */
static int last_segment_begins(PyObject *path, Py_ssize_t length, PyObject *beginnings)
{
	Py_ssize_t slash = PyUnicode_FindChar(path, '/', 0, length, -1), i;

	if (slash == -2)
		return -1;
	for (i = 0; i < PyTuple_GET_SIZE(beginnings); i++) {
		Py_ssize_t found = PyUnicode_Tailmatch(path, PyTuple_GET_ITEM(beginnings, i), slash + 1, length, -1);

		if (found != 0)
			return (int)found;
	}
	return 0;
}

/* first_glob(root, join, path) -> PathGlob | None: profiles.globs.GlobList.first. Walks the
 * list's tree of literal segments (_SegmentNode: children, joined) as far as the path's segments
 * lead, as path[1:].split("/") gives them, then answers with that node's joined (globs.Joined),
 * made by join(node) at the node's first use: the glob every absolute path reaching the node
 * matches, if there is one; None if the path's last segment begins with none of the beginnings;
 * else the joined expression's fullmatch, whose group that matched names the glob. */
static PyObject *first_glob(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
	PyObject *node, *path, *children, *child, *segment, *joined = NULL, *found, *index, *glob = NULL;
	Py_ssize_t length, start, end, group;

	if (nargs != 3 || !PyUnicode_Check(args[2]))
		return PyErr_Format(PyExc_TypeError, "first_glob(root, join, path: str)");
	path = args[2];
	length = PyUnicode_GET_LENGTH(path);
	node = Py_NewRef(args[0]);
	for (start = length ? 1 : 0; start <= length; start = end + 1) {
		end = PyUnicode_FindChar(path, '/', start, length, 1);
		if (end == -2)
			goto out;
		if (end == -1)
			end = length;
		children = PyObject_GetAttr(node, str_children);
		if (children == NULL || !PyDict_Check(children)) {
			if (children != NULL)
				PyErr_SetString(PyExc_TypeError, "first_glob: a node's children must be a dict");
			Py_XDECREF(children);
			goto out;
		}
		segment = PyUnicode_Substring(path, start, end);
		child = segment ? PyDict_GetItemWithError(children, segment) : NULL;
		Py_XDECREF(segment);
		Py_XINCREF(child);
		Py_DECREF(children);
		if (child == NULL) {
			if (PyErr_Occurred())
				goto out;
			break;
		}
		Py_SETREF(node, child);
	}
	joined = PyObject_GetAttr(node, str_joined);
	if (joined == Py_None) {
		Py_DECREF(joined);
		joined = PyObject_CallOneArg(args[1], node);
	}
	if (joined == NULL)
		goto out;
	if (!PyTuple_Check(joined) || PyTuple_GET_SIZE(joined) != 4 ||
	    (PyTuple_GET_ITEM(joined, 3) != Py_None && !PyTuple_Check(PyTuple_GET_ITEM(joined, 3)))) {
		PyErr_SetString(PyExc_TypeError, "first_glob: a node's joined is (fullmatch or None, globs, "
				"everything or None, beginnings or None)");
		goto out;
	}
	if (PyTuple_GET_ITEM(joined, 2) != Py_None && length && PyUnicode_READ_CHAR(path, 0) == '/') {
		glob = Py_NewRef(PyTuple_GET_ITEM(joined, 2));
		goto out;
	}
	if (PyTuple_GET_ITEM(joined, 3) != Py_None) {
		int begins = last_segment_begins(path, length, PyTuple_GET_ITEM(joined, 3));

		if (begins < 0)
			goto out;
		if (!begins) {
			glob = Py_NewRef(Py_None);
			goto out;
		}
	}
	if (PyTuple_GET_ITEM(joined, 0) == Py_None) {
		glob = Py_NewRef(Py_None);
		goto out;
	}
	found = PyObject_CallOneArg(PyTuple_GET_ITEM(joined, 0), path);
	if (found == NULL || found == Py_None) {
		glob = found;
		goto out;
	}
	index = PyObject_GetAttr(found, str_lastindex);
	Py_DECREF(found);
	group = index ? PyLong_AsSsize_t(index) : -1;
	Py_XDECREF(index);
	if (!PyErr_Occurred())
		glob = PySequence_GetItem(PyTuple_GET_ITEM(joined, 1), group - 1);
out:
	Py_DECREF(node);
	Py_XDECREF(joined);
	return glob;
}

static PyMethodDef paths_methods[] = {
	{"set_types", set_types, METH_O, "set_types(Target): what known_name builds"},
	{"known_name", (PyCFunction)(void (*)(void))known_name, METH_FASTCALL,
	 "known_name(dirs, name, names_gen, now_ns) -> Target | None, holding the GIL."},
	{"realpath", paths_realpath, METH_O, "realpath(3), holding the GIL; None if it fails."},
	{"first_glob", (PyCFunction)(void (*)(void))first_glob, METH_FASTCALL,
	 "first_glob(root, join, path) -> the first glob of a GlobList that matches path, or None"},
	{NULL, NULL, 0, NULL},
};

static struct PyModuleDef paths_module = {
    PyModuleDef_HEAD_INIT, "sensor._paths", "Path syscalls of the judge, holding the GIL.", -1, paths_methods,
};

PyMODINIT_FUNC PyInit__paths(void)
{
	str_children = PyUnicode_InternFromString("children");
	str_joined = PyUnicode_InternFromString("joined");
	str_lastindex = PyUnicode_InternFromString("lastindex");
	if (str_children == NULL || str_joined == NULL || str_lastindex == NULL)
		return NULL;
	return PyModule_Create(&paths_module);
}
