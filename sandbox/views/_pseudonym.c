/*
 * Optional accelerator for keyed pseudonyms (sandbox/views/pseudonyms.py): HMAC-SHA256 of
 * every value of an Arrow string array, written as 64 letters a-p each (the hex digits
 * 0-9 as g-p, as sandbox.views.fields.PSEUDONYM_DIGITS says). The SQL expression in
 * sandbox/views/fields.py is the reference; this module must give exactly its results.
 *
 * The key's two pads are hashed once (their SHA-256 mid-states are kept), so each value
 * costs two compressions instead of four. The loop runs without the GIL, so DuckDB's
 * threads hash in parallel.
 *
 * hmac_letters(key, offsets, data, count) -> bytes
 *   key      the HMAC key (at most 64 bytes: longer keys are hashed first by the caller)
 *   offsets  bytes-like: count + 1 little-endian int32 offsets into data (Arrow "string")
 *   data     bytes-like: the values' UTF-8 bytes
 *   returns  64 * count bytes, the pseudonyms one after the other
 */
#define PY_SSIZE_T_CLEAN
#define OPENSSL_SUPPRESS_DEPRECATED
#include <Python.h>
#include <openssl/sha.h>
#include <stdint.h>
#include <string.h>

#define BLOCK 64
#define LETTERS "ghijklmnopabcdef" /* 0-9 -> g-p, a-f stay */

static PyObject *hmac_letters(PyObject *self, PyObject *args) {
    Py_buffer key, offsets, data;
    Py_ssize_t count;
    if (!PyArg_ParseTuple(args, "y*y*y*n", &key, &offsets, &data, &count)) return NULL;
    PyObject *result = NULL;
    if (key.len > BLOCK || count < 0 || count > PY_SSIZE_T_MAX / 64 - 1 ||
        offsets.len / (Py_ssize_t)sizeof(int32_t) < count + 1) {
        PyErr_SetString(PyExc_ValueError, "key, offsets and count do not fit together");
        goto done;
    }
    const int32_t *offset = (const int32_t *)offsets.buf;
    for (Py_ssize_t i = 0; i <= count; i++) {
        if (offset[i] < 0 || offset[i] > data.len || (i > 0 && offset[i] < offset[i - 1])) {
            PyErr_SetString(PyExc_ValueError, "an offset points outside the data");
            goto done;
        }
    }
    result = PyBytes_FromStringAndSize(NULL, count * 64);
    if (result == NULL) goto done;
    unsigned char *out = (unsigned char *)PyBytes_AS_STRING(result);
    unsigned char ipad[BLOCK], opad[BLOCK];
    memset(ipad, 0x36, BLOCK);
    memset(opad, 0x5c, BLOCK);
    for (Py_ssize_t i = 0; i < key.len; i++) {
        ipad[i] ^= ((const unsigned char *)key.buf)[i];
        opad[i] ^= ((const unsigned char *)key.buf)[i];
    }
    SHA256_CTX inner0, outer0;
    SHA256_Init(&inner0);
    SHA256_Update(&inner0, ipad, BLOCK);
    SHA256_Init(&outer0);
    SHA256_Update(&outer0, opad, BLOCK);
    const unsigned char *bytes = (const unsigned char *)data.buf;
    Py_BEGIN_ALLOW_THREADS
    for (Py_ssize_t i = 0; i < count; i++) {
        unsigned char digest[SHA256_DIGEST_LENGTH];
        SHA256_CTX ctx = inner0;
        SHA256_Update(&ctx, bytes + offset[i], (size_t)(offset[i + 1] - offset[i]));
        SHA256_Final(digest, &ctx);
        ctx = outer0;
        SHA256_Update(&ctx, digest, SHA256_DIGEST_LENGTH);
        SHA256_Final(digest, &ctx);
        unsigned char *target = out + 64 * i;
        for (int j = 0; j < SHA256_DIGEST_LENGTH; j++) {
            target[2 * j] = LETTERS[digest[j] >> 4];
            target[2 * j + 1] = LETTERS[digest[j] & 15];
        }
    }
    Py_END_ALLOW_THREADS
done:
    PyBuffer_Release(&key);
    PyBuffer_Release(&offsets);
    PyBuffer_Release(&data);
    return result;
}

static PyMethodDef methods[] = {
    {"hmac_letters", hmac_letters, METH_VARARGS, "HMAC-SHA256 pseudonyms of Arrow strings."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_pseudonym", NULL, -1, methods};

PyMODINIT_FUNC PyInit__pseudonym(void) { return PyModule_Create(&module); }
