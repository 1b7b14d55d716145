/*
 * Optional accelerator for audit.walk: checks and hashes plain entry lines at native
 * speed. audit/walk.py is the reference; this module must give exactly its results and
 * hands every line it is not sure about back to it (status 1), so a verifier without a
 * C compiler loses speed, never strictness. See FORMAT.md §3 and §8.
 *
 * scan(buf, pos, end, seq, prev, last_time, levels, hashes, stop)
 *   buf        bytes-like holding entry lines ("\n"-terminated)
 *   pos, end   byte range of buf to scan
 *   seq        sequence number the line at pos must carry
 *   prev       32-byte leaf hash of the entry before, or None before entry 0 of a walk
 *              that starts mid-ledger (then the first prev is taken as given)
 *   last_time  time of the entry before (times never decrease)
 *   levels, hashes  the compact range [0, seq) as Python lists; updated in place
 *   stop       return when seq reaches this value
 * returns (pos, seq, prev, last_time, status)
 *   status 0: reached stop, or no complete line left before end
 *   status 1: the line at pos must be handled by the reference code (a reserved
 *             "ledger." action, an unusual form, or any check failed)
 */
#define PY_SSIZE_T_CLEAN
#define OPENSSL_SUPPRESS_DEPRECATED
#include <Python.h>
#include <openssl/sha.h>
#include <string.h>

#define HASH 32
#define MAX_LEVELS 64

static const char RESERVED[] = "{\"action\":\"ledger.";
static const char SUFFIX[] = ",\"v\":1}";
static const char TIME_KEY[] = ",\"time\":";
static const char SEQ_KEY[] = "\",\"seq\":";
static const char PREV_KEY[] = ",\"prev\":\"";

static int hex_value(unsigned char c) {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    return -1;
}

/* Parse the decimal digits ending just before `*cursor` (exclusive), moving the cursor to
 * their first digit. Canonical integers only: no leading zero, at most 16 digits. */
static int parse_back_uint(const unsigned char *start, const unsigned char **cursor,
                           unsigned long long *value) {
    const unsigned char *p = *cursor;
    int digits = 0;
    while (p > start && p[-1] >= '0' && p[-1] <= '9' && digits <= 16) {
        p--;
        digits++;
    }
    if (digits == 0 || digits > 16 || (digits > 1 && *p == '0')) return -1;
    unsigned long long v = 0;
    for (const unsigned char *q = p; q < *cursor; q++) v = v * 10 + (unsigned long long)(*q - '0');
    *value = v;
    *cursor = p;
    return 0;
}

static int ends_with_key(const unsigned char *start, const unsigned char **cursor,
                         const char *key) {
    size_t n = strlen(key);
    if ((size_t)(*cursor - start) < n || memcmp(*cursor - n, key, n) != 0) return -1;
    *cursor -= n;
    return 0;
}

static void node_hash(const unsigned char *left, const unsigned char *right, unsigned char *out) {
    SHA256_CTX ctx;
    static const unsigned char prefix = 0x01;
    SHA256_Init(&ctx);
    SHA256_Update(&ctx, &prefix, 1);
    SHA256_Update(&ctx, left, HASH);
    SHA256_Update(&ctx, right, HASH);
    SHA256_Final(out, &ctx);
}

static PyObject *scan(PyObject *self, PyObject *args) {
    Py_buffer view;
    Py_ssize_t pos, end;
    unsigned long long seq, last_time, stop;
    PyObject *prev_obj, *levels_list, *hashes_list;
    if (!PyArg_ParseTuple(args, "y*nnKOKO!O!K", &view, &pos, &end, &seq, &prev_obj, &last_time,
                          &PyList_Type, &levels_list, &PyList_Type, &hashes_list, &stop))
        return NULL;

    unsigned char prev[HASH];
    int have_prev = 0;
    int levels[MAX_LEVELS];
    unsigned char hashes[MAX_LEVELS][HASH];
    Py_ssize_t depth = PyList_GET_SIZE(levels_list);
    PyObject *result = NULL;

    if (end > view.len || pos < 0 || pos > end) {
        PyErr_SetString(PyExc_ValueError, "scan range outside the buffer");
        goto done;
    }
    if (prev_obj != Py_None) {
        if (!PyBytes_Check(prev_obj) || PyBytes_GET_SIZE(prev_obj) != HASH) {
            PyErr_SetString(PyExc_ValueError, "prev must be 32 bytes or None");
            goto done;
        }
        memcpy(prev, PyBytes_AS_STRING(prev_obj), HASH);
        have_prev = 1;
    }
    if (depth != PyList_GET_SIZE(hashes_list) || depth > MAX_LEVELS) {
        PyErr_SetString(PyExc_ValueError, "levels and hashes must be lists of equal length");
        goto done;
    }
    for (Py_ssize_t i = 0; i < depth; i++) {
        PyObject *h = PyList_GET_ITEM(hashes_list, i);
        long level = PyLong_AsLong(PyList_GET_ITEM(levels_list, i));
        if (level < 0 || level >= MAX_LEVELS || !PyBytes_Check(h) || PyBytes_GET_SIZE(h) != HASH) {
            if (!PyErr_Occurred()) PyErr_SetString(PyExc_ValueError, "malformed compact range");
            goto done;
        }
        levels[i] = (int)level;
        memcpy(hashes[i], PyBytes_AS_STRING(h), HASH);
    }

    const unsigned char *buf = (const unsigned char *)view.buf;
    int status = 0;
    Py_BEGIN_ALLOW_THREADS
    while (seq < stop) {
        const unsigned char *line = buf + pos;
        const unsigned char *nl = memchr(line, '\n', (size_t)(end - pos));
        if (nl == NULL) break;
        size_t length = (size_t)(nl - line);
        if (length >= sizeof(RESERVED) - 1 && memcmp(line, RESERVED, sizeof(RESERVED) - 1) == 0) {
            status = 1;
            break;
        }
        const unsigned char *cursor = nl;
        unsigned long long time_value, seq_value;
        if (ends_with_key(line, &cursor, SUFFIX) || parse_back_uint(line, &cursor, &time_value) ||
            ends_with_key(line, &cursor, TIME_KEY) || parse_back_uint(line, &cursor, &seq_value) ||
            ends_with_key(line, &cursor, SEQ_KEY) || cursor - line < 64) {
            status = 1;
            break;
        }
        cursor -= 64;
        const unsigned char *hex = cursor;
        if (ends_with_key(line, &cursor, PREV_KEY) || seq_value != seq || time_value < last_time) {
            status = 1;
            break;
        }
        unsigned char recorded[HASH];
        int bad = 0;
        for (int i = 0; i < HASH; i++) {
            int hi = hex_value(hex[2 * i]), lo = hex_value(hex[2 * i + 1]);
            if (hi < 0 || lo < 0) { bad = 1; break; }
            recorded[i] = (unsigned char)(hi << 4 | lo);
        }
        if (bad || (have_prev && memcmp(recorded, prev, HASH) != 0)) {
            status = 1;
            break;
        }
        if (!have_prev && seq == 0) {
            static const unsigned char zero[HASH] = {0};
            if (memcmp(recorded, zero, HASH) != 0) { status = 1; break; }
        }
        SHA256_CTX ctx;
        static const unsigned char leaf_prefix = 0x00;
        unsigned char node[HASH];
        SHA256_Init(&ctx);
        SHA256_Update(&ctx, &leaf_prefix, 1);
        SHA256_Update(&ctx, line, length);
        SHA256_Final(node, &ctx);
        memcpy(prev, node, HASH);
        have_prev = 1;
        /* Append the leaf to the compact range, merging completed siblings. */
        int level = 0;
        unsigned long long index = seq + 1;
        while (depth > 0 && levels[depth - 1] == level && !(index & 1)) {
            node_hash(hashes[depth - 1], node, node);
            depth--;
            level++;
            index >>= 1;
        }
        levels[depth] = level;
        memcpy(hashes[depth], node, HASH);
        depth++;
        last_time = time_value;
        seq++;
        pos = (Py_ssize_t)(nl - buf) + 1;
    }
    Py_END_ALLOW_THREADS

    if (PyList_SetSlice(levels_list, 0, PyList_GET_SIZE(levels_list), NULL) < 0 ||
        PyList_SetSlice(hashes_list, 0, PyList_GET_SIZE(hashes_list), NULL) < 0)
        goto done;
    for (Py_ssize_t i = 0; i < depth; i++) {
        PyObject *l = PyLong_FromLong(levels[i]);
        PyObject *h = PyBytes_FromStringAndSize((const char *)hashes[i], HASH);
        int failed = l == NULL || h == NULL || PyList_Append(levels_list, l) < 0 ||
                     PyList_Append(hashes_list, h) < 0;
        Py_XDECREF(l);
        Py_XDECREF(h);
        if (failed) goto done;
    }
    if (have_prev)
        result = Py_BuildValue("nKy#Ki", pos, seq, (const char *)prev, (Py_ssize_t)HASH, last_time, status);
    else
        result = Py_BuildValue("nKOKi", pos, seq, Py_None, last_time, status);
done:
    PyBuffer_Release(&view);
    return result;
}

static PyMethodDef methods[] = {
    {"scan", scan, METH_VARARGS, "Check and hash plain entry lines; see the module comment."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "audit._walkfast",
    "Native fast path for audit.walk (optional; audit.walk is the reference).", -1, methods,
};

PyMODINIT_FUNC PyInit__walkfast(void) { return PyModule_Create(&module); }
