/* The live event feed's records (sensor/export/event_feed.py), written as protobuf bytes as the
 * judge publishes them, and cut into messages by the consumers' gRPC threads.
 *
 * A consumer's queue is a bytearray of EventRecords, each framed as field 1 of an EventBatch
 * (proto/agent_sensor/v1/sensor.proto): a cut from its front is a StreamEventBatches message as
 * it stands. Built as protobuf objects on the gRPC thread instead, a record cost that thread
 * about 1.2 us under load, with the GIL the judge needs held, and each queued record was a
 * tuple for the garbage collector to walk. Here put() costs the judge about 0.2 us and a cut
 * 0.01 us a record.
 *
 * The judge's thread puts, a gRPC thread cuts, both holding the GIL. put() runs its only Python
 * (wire_text) before it touches the queue, and neither lets go of the GIL from then on: a cut
 * never sees half a record.
 *
 * The fields are written in field-number order, as protobuf writes them, default values left
 * out (proto3), `time` always present: tests/unit/test_event_feed.py checks the bytes against
 * protobuf's own serialization of the same record, every field. */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <string.h>
#include <time.h>

/* Set once by set_text: decode.wire_text, for a string that is not ASCII (its bytes may not be
 * UTF-8, which a protobuf string must be). */
static PyObject *wire_text;

enum { BATCH_RECORDS = 1, REC_SEQ = 1, REC_TIME, REC_AGENT, REC_INSTANCE, REC_PID, REC_TYPE, REC_WHAT,
       REC_KERNEL_ACTED, REC_DROPPED, REC_REPEATS, REC_RESULT, TS_SECONDS = 1, TS_NANOS };
enum { VARINT = 0, LENGTH = 2 };

#define TAG(field, type) ((uint8_t)((field) << 3 | (type)))
#define VARINT_MAX 10
#define NS 1000000000LL

static PyObject *set_text(PyObject *self, PyObject *fn)
{
	if (!PyCallable_Check(fn))
		return PyErr_Format(PyExc_TypeError, "set_text: wire_text must be callable");
	Py_XSETREF(wire_text, Py_NewRef(fn));
	Py_RETURN_NONE;
}

static size_t varint_size(uint64_t v)
{
	size_t n = 1;

	while (v >= 0x80) {
		v >>= 7;
		n++;
	}
	return n;
}

static uint8_t *put_varint(uint8_t *p, uint64_t v)
{
	while (v >= 0x80) {
		*p++ = (uint8_t)(v | 0x80);
		v >>= 7;
	}
	*p++ = (uint8_t)v;
	return p;
}

/* A string's UTF-8 as the record carries it; *owner holds a converted copy (or NULL). */
static const char *utf8(PyObject *s, Py_ssize_t *size, PyObject **owner)
{
	*owner = NULL;
	if (!PyUnicode_Check(s)) {
		PyErr_SetString(PyExc_TypeError, "event record strings must be str");
		return NULL;
	}
	if (!PyUnicode_IS_ASCII(s)) {
		if (wire_text == NULL) {
			PyErr_SetString(PyExc_RuntimeError, "sensor._event_wire: set_text was not called");
			return NULL;
		}
		s = *owner = PyObject_CallOneArg(wire_text, s);
		if (s == NULL)
			return NULL;
	}
	return PyUnicode_AsUTF8AndSize(s, size);
}

struct text {
	const char *utf8;
	Py_ssize_t size;
	PyObject *owner;
};

static size_t string_field_size(const struct text *t)
{
	return t->size ? 1 + varint_size((uint64_t)t->size) + (size_t)t->size : 0;
}

static uint8_t *put_string(uint8_t *p, int field, const struct text *t)
{
	if (!t->size)
		return p;
	*p++ = TAG(field, LENGTH);
	p = put_varint(p, (uint64_t)t->size);
	memcpy(p, t->utf8, (size_t)t->size);
	return p + t->size;
}

static size_t varint_field_size(uint64_t v)
{
	return v ? 1 + varint_size(v) : 0;
}

static uint8_t *put_varint_field(uint8_t *p, int field, uint64_t v)
{
	if (!v)
		return p;
	*p++ = TAG(field, VARINT);
	return put_varint(p, v);
}

/* The kernel's CLOCK_MONOTONIC stamp as wall time, with the offset taken now (as alerts.wall_ns). */
static long long wall_ns(long long ktime_ns)
{
	struct timespec real, mono;

	clock_gettime(CLOCK_REALTIME, &real);
	clock_gettime(CLOCK_MONOTONIC, &mono);
	return ktime_ns + (real.tv_sec - mono.tv_sec) * NS + (real.tv_nsec - mono.tv_nsec);
}

/* put(queue, seq, agent, instance_id, pid, kind, what, kernel_acted, ktime_ns, repeats, result, dropped):
 * one EventRecord appended to a consumer's queue, framed as a batch's record. */
static PyObject *put(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
	struct text texts[4] = {0};  /* agent, instance_id, kind, what */
	unsigned long long seq, pid, repeats, dropped;
	long long ktime_ns, wall, seconds, nanos;
	PyObject *queue, *result = NULL;
	int kernel_acted, has_result;
	uint64_t result_bits = 0;
	size_t stamp, record, frame;
	Py_ssize_t at;
	uint8_t *p;

	if (nargs != 12)
		return PyErr_Format(PyExc_TypeError, "put() takes 12 arguments (%zd given)", nargs);
	queue = args[0];
	if (!PyByteArray_Check(queue))
		return PyErr_Format(PyExc_TypeError, "put: the queue must be a bytearray");
	seq = PyLong_AsUnsignedLongLong(args[1]);
	pid = PyLong_AsUnsignedLongLong(args[4]);
	kernel_acted = PyObject_IsTrue(args[7]);
	ktime_ns = PyLong_AsLongLong(args[8]);
	repeats = PyLong_AsUnsignedLongLong(args[9]);
	has_result = args[10] != Py_None;
	if (has_result)
		result_bits = (uint64_t)(int64_t)(int32_t)PyLong_AsLong(args[10]);  /* int32: negative in 10 bytes */
	dropped = PyLong_AsUnsignedLongLong(args[11]);
	if (PyErr_Occurred())
		return NULL;
	for (int i = 0; i < 4; i++) {
		static const int at_arg[4] = {2, 3, 5, 6};

		texts[i].utf8 = utf8(args[at_arg[i]], &texts[i].size, &texts[i].owner);
		if (texts[i].utf8 == NULL)
			goto out;
	}
	wall = wall_ns(ktime_ns);  /* positive: the wall clock is decades past the boot */
	seconds = wall / NS;
	nanos = wall % NS;
	stamp = varint_field_size((uint64_t)seconds) + varint_field_size((uint64_t)nanos);
	record = varint_field_size(seq) + 1 + varint_size(stamp) + stamp + string_field_size(&texts[0]) +
		 string_field_size(&texts[1]) + varint_field_size(pid) + string_field_size(&texts[2]) +
		 string_field_size(&texts[3]) + (kernel_acted ? 2 : 0) + varint_field_size(dropped) +
		 varint_field_size(repeats) + (has_result ? 1 + varint_size(result_bits) : 0);
	frame = 1 + varint_size(record) + record;
	at = PyByteArray_GET_SIZE(queue);
	if (PyByteArray_Resize(queue, at + (Py_ssize_t)frame) < 0)
		goto out;
	p = (uint8_t *)PyByteArray_AS_STRING(queue) + at;
	*p++ = TAG(BATCH_RECORDS, LENGTH);
	p = put_varint(p, record);
	p = put_varint_field(p, REC_SEQ, seq);
	*p++ = TAG(REC_TIME, LENGTH);
	p = put_varint(p, stamp);
	p = put_varint_field(p, TS_SECONDS, (uint64_t)seconds);
	p = put_varint_field(p, TS_NANOS, (uint64_t)nanos);
	p = put_string(p, REC_AGENT, &texts[0]);
	p = put_string(p, REC_INSTANCE, &texts[1]);
	p = put_varint_field(p, REC_PID, pid);
	p = put_string(p, REC_TYPE, &texts[2]);
	p = put_string(p, REC_WHAT, &texts[3]);
	p = put_varint_field(p, REC_KERNEL_ACTED, (uint64_t)kernel_acted);
	p = put_varint_field(p, REC_DROPPED, dropped);
	p = put_varint_field(p, REC_REPEATS, repeats);
	if (has_result) {
		*p++ = TAG(REC_RESULT, VARINT);
		p = put_varint(p, result_bits);
	}
	result = Py_NewRef(Py_None);
out:
	for (int i = 0; i < 4; i++)
		Py_XDECREF(texts[i].owner);
	return result;
}

/* The length of the framed record at p (end: the queue's end), or 0 if the bytes are not one. */
static size_t framed_size(const uint8_t *p, const uint8_t *end, size_t *header)
{
	const uint8_t *q = p + 1;
	uint64_t size = 0;

	if (p >= end || *p != TAG(BATCH_RECORDS, LENGTH))
		return 0;
	for (int shift = 0; q < end && shift < 7 * VARINT_MAX; shift += 7) {
		size |= (uint64_t)(*q & 0x7f) << shift;
		if (!(*q++ & 0x80)) {
			*header = (size_t)(q - p);
			return size <= (uint64_t)(end - q) ? *header + (size_t)size : 0;
		}
	}
	return 0;
}

/* cut(queue, most, max_bytes, bare) -> bytes: the first records of the queue, removed from it:
 * up to `most`, and no more than max_bytes unless the first alone is larger. An EventBatch's
 * bytes; with bare, the first record alone, an EventRecord's. b"" if the queue is empty. */
static PyObject *cut(PyObject *self, PyObject *args)
{
	Py_ssize_t most, max_bytes, count = 0;
	size_t total = 0, size, header = 0;
	const uint8_t *start, *end;
	PyObject *queue, *out;
	int bare;

	if (!PyArg_ParseTuple(args, "O!nnp:cut", &PyByteArray_Type, &queue, &most, &max_bytes, &bare))
		return NULL;
	start = (const uint8_t *)PyByteArray_AS_STRING(queue);
	end = start + PyByteArray_GET_SIZE(queue);
	while (count < (bare ? 1 : most) && start + total < end) {
		size = framed_size(start + total, end, &header);
		if (size == 0)
			return PyErr_Format(PyExc_ValueError, "cut: the queue holds no whole record at byte %zu", total);
		if (count && total + size > (size_t)max_bytes)
			break;
		total += size;
		count++;
	}
	out = bare && total ? PyBytes_FromStringAndSize((const char *)start + header, (Py_ssize_t)(total - header))
			    : PyBytes_FromStringAndSize((const char *)start, (Py_ssize_t)total);
	if (out == NULL || !total)
		return out;
	/* From the front: the bytearray moves its start instead of its bytes. */
	if (PySequence_DelSlice(queue, 0, (Py_ssize_t)total) < 0)
		Py_CLEAR(out);
	return out;
}

static PyMethodDef methods[] = {
	{"set_text", set_text, METH_O, "set_text(wire_text): how a string that is not ASCII is written"},
	{"put", (PyCFunction)(void (*)(void))put, METH_FASTCALL,
	 "put(queue, seq, agent, instance_id, pid, kind, what, kernel_acted, ktime_ns, repeats, result, dropped): "
	 "an EventRecord appended to the queue (a bytearray), framed as a batch's record"},
	{"cut", cut, METH_VARARGS,
	 "cut(queue, most, max_bytes, bare) -> bytes: the first records, removed from the queue: an EventBatch "
	 "(bare: one EventRecord)"},
	{NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
	PyModuleDef_HEAD_INIT, "sensor._event_wire", "The event feed's records, written as protobuf bytes.", -1, methods,
};

PyMODINIT_FUNC PyInit__event_wire(void)
{
	return PyModule_Create(&module);
}
