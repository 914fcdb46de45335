"""Builds framebus._ring (the C ring and its Cython binding) and framebus._envelope from _native/."""

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
    sources=["_native/_ring.pyx", "_native/fb_ring.c", "_native/fb_crc32c.c"],
    include_dirs=["_native"],
    extra_compile_args=cflags,
    define_macros=[("NPY_NO_DEPRECATED_API", "NPY_1_7_API_VERSION")],
)

# Envelope codec (framebus.envelope); pure Cython, no C sources of its own
envelope = Extension(
    "framebus._envelope",
    sources=["_native/_envelope.pyx"],
    include_dirs=["_native"],
    extra_compile_args=cflags,
)

setup(
    ext_modules=cythonize(
        [ring, envelope],
        include_path=["_native"],
        annotate=debug,
        compiler_directives={"language_level": "3", "embedsignature": True},
    ),
)
