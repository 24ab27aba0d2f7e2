/* Building Python named tuples from C, shared by sensor/_decode.c and sensor/_paths.c: each is
 * given its types by Python once (set_types) and fills them positionally, in their field order. */
#ifndef SENSOR_NAMED_TUPLE_H
#define SENSOR_NAMED_TUPLE_H

#define PY_SSIZE_T_CLEAN
#include <Python.h>

/* How many fields a named tuple type has; -1 for another type. */
static Py_ssize_t named_tuple_fields(PyObject *type)
{
	PyObject *names;
	Py_ssize_t n = -1;

	if (!PyType_Check(type) || !PyType_IsSubtype((PyTypeObject *)type, &PyTuple_Type))
		return -1;
	names = PyObject_GetAttrString(type, "_fields");
	if (names != NULL && PyTuple_Check(names))
		n = PyTuple_GET_SIZE(names);
	Py_XDECREF(names);
	PyErr_Clear();
	return n;
}

/* Item i of the named tuple t being filled, or to fail: t was made by its type's tp_alloc, as
 * tuple.__new__ makes one, so an item not yet set is NULL, which tuples' dealloc skips. */
#define PUT(t, i, expr)                     \
	do {                                \
		PyObject *v_ = (expr);      \
		if (v_ == NULL)             \
			goto fail;          \
		PyTuple_SET_ITEM(t, i, v_); \
	} while (0)

#endif
