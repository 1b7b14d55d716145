"""(b'') The RFC 9162 hashing work at native speed: a tiny C program, compiled on first
use into ``var/bench/`` when a C compiler and OpenSSL's headers are there, that does per
entry exactly one leaf hash ``SHA-256(0x00 || entry)`` and one interior-node hash
``SHA-256(0x01 || left || right)`` over memory-mapped segment files, and nothing else.
It is the floor any verifier of this format pays on one core."""

from __future__ import annotations

import resource
import shutil
import subprocess
import time
from pathlib import Path

from bench.common import VAR

SOURCE = r"""
#define OPENSSL_SUPPRESS_DEPRECATED
#include <openssl/sha.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

int main(int argc, char **argv) {
    unsigned char leaf[32], last[32] = {0}, node[32], buf[65];
    unsigned long long count = 0;
    for (int i = 1; i < argc; i++) {
        int fd = open(argv[i], O_RDONLY);
        struct stat st;
        if (fd < 0 || fstat(fd, &st) != 0) { perror(argv[i]); return 2; }
        if (st.st_size == 0) { close(fd); continue; }
        const unsigned char *data = mmap(NULL, st.st_size, PROT_READ, MAP_PRIVATE, fd, 0);
        if (data == MAP_FAILED) { perror("mmap"); return 2; }
        const unsigned char *p = data, *end = data + st.st_size;
        while (p < end) {
            const unsigned char *nl = memchr(p, '\n', end - p);
            if (!nl) break;
            SHA256_CTX ctx;
            SHA256_Init(&ctx);
            SHA256_Update(&ctx, "\0", 1);
            SHA256_Update(&ctx, p, nl - p);
            SHA256_Final(leaf, &ctx);
            buf[0] = 1;
            memcpy(buf + 1, last, 32);
            memcpy(buf + 33, leaf, 32);
            SHA256(buf, 65, node);
            memcpy(last, leaf, 32);
            count++;
            p = nl + 1;
        }
        munmap((void *)data, st.st_size);
        close(fd);
    }
    printf("%llu %02x\n", count, node[0]);
    return 0;
}
"""


def binary() -> Path | None:
    """The compiled program, or ``None`` when it cannot be built here."""
    target = VAR / "hashfloor"
    source = VAR / "hashfloor.c"
    if target.exists() and source.exists() and source.read_text() == SOURCE:
        return target
    compiler = shutil.which("cc") or shutil.which("gcc")
    if compiler is None:
        return None
    VAR.mkdir(parents=True, exist_ok=True)
    source.write_text(SOURCE)
    done = subprocess.run(
        [compiler, "-O2", "-o", str(target), str(source), "-lcrypto"],
        capture_output=True,
        text=True,
    )
    return target if done.returncode == 0 else None


def run(files: list[Path]) -> tuple[float, float, int] | None:
    """``(wall, cpu, entries)`` of one run over ``files``, or ``None`` if unavailable."""
    program = binary()
    if program is None:
        return None
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    out = subprocess.run(
        [str(program), *map(str, files)], check=True, capture_output=True, text=True
    )
    wall = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall, cpu, int(out.stdout.split()[0])
