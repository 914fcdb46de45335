"""Builds from _native/: framebus._ring (the C ring and its Cython binding), framebus._walcodec
(the WAL record codec) and framebus._port (DataPort's core) on it, and framebus._envelope."""

import os
import platform

from Cython.Build import cythonize
from setuptools import Extension, setup

debug = os.environ.get("FRAMEBUS_DEBUG") == "1"
# hidden visibility + no interposition: calls inside the module can be inlined
cflags = ["-std=gnu11", "-Wall", "-Wextra", "-Wno-unused-function", "-fvisibility=hidden",
          "-fno-semantic-interposition"]
cflags += ["-O0", "-g"] if debug else ["-O3"]
if platform.machine() in ("x86_64", "AMD64"):
    cflags.append("-mcx16")  # the ring's (position, sequence) claim is a cmpxchg16b

ring = Extension(
    "framebus._ring",
    sources=["_native/_ring.pyx", "_native/fb_ring.c"],
    include_dirs=["_native"],
    extra_compile_args=cflags,
    define_macros=[("NPY_NO_DEPRECATED_API", "NPY_1_7_API_VERSION")],
)

# Built on the binding (cimport framebus._ring): the WAL record codec, DataPort's core
walcodec = Extension(
    "framebus._walcodec",
    sources=["_native/_walcodec.pyx", "_native/fb_crc32c.c"],
    include_dirs=["_native"],
    extra_compile_args=cflags,
)
port = Extension(
    "framebus._port",
    sources=["_native/_port.pyx"],
    include_dirs=["_native"],
    extra_compile_args=cflags,
)

# Envelope codec (framebus.envelope); pure Cython, no C sources of its own
envelope = Extension(
    "framebus._envelope",
    sources=["_native/_envelope.pyx"],
    include_dirs=["_native"],
    extra_compile_args=cflags,
)


def _pxd_changed() -> bool:
    # Cython finds _ring.pyx's declarations under the import name (framebus/_ring.pxd)
    # but does not track them as its dependency: regenerate when they are newer
    out = "_native/_ring.c"
    return not os.path.exists(out) or os.path.getmtime("framebus/_ring.pxd") > os.path.getmtime(out)


setup(
    ext_modules=cythonize(
        [ring, walcodec, port, envelope],
        include_path=["_native", "."],  # ".": framebus/_ring.pxd, the binding's types
        annotate=debug,
        force=_pxd_changed(),
        compiler_directives={"language_level": "3", "embedsignature": True},
    ),
)
