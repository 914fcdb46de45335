/*
 * fb_crc32c.h - CRC-32C (Castagnoli), as iSCSI, ext4 and RocksDB use it: the
 * checksum of the WAL's records. SSE4.2's crc32 instruction where the CPU has it
 * (checked once at run time), a table otherwise; both give the same values.
 */
#ifndef FB_CRC32C_H
#define FB_CRC32C_H

#include <stddef.h>
#include <stdint.h>

/* CRC-32C of buf[0, len) (initial value and final xor 0xFFFFFFFF: the usual one,
 * e.g. 0xE3069283 for "123456789"). */
uint32_t fb_crc32c(const void *buf, size_t len);

#endif /* FB_CRC32C_H */
