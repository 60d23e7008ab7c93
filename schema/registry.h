/*
 * The payloads of the registrar's functions (schema/tractor.proto,
 * RegistryEntries): a list of registry entries, encoded into a buffer and
 * back.  Every registrar call takes and returns one list
 * (docs/PROTOCOL.md section 11).
 *
 * Layer: schema.
 */
#ifndef TRACTOR_SCHEMA_REGISTRY_H
#define TRACTOR_SCHEMA_REGISTRY_H

#include <stddef.h>

#include <tractor/buf.h>
#include <tractor/discovery.h>

/*
 * Encodes v[0..n) as RegistryEntries.  Returns 0 with *out (NULL for an
 * empty list, the empty payload), or -TR_ENOMEM / -TR_EINVAL (an entry
 * without a name).
 * Ownership: borrows v; *out is the caller's.  Threads: any.
 */
int tr__reg_pack(const tr_registry_entry_t *v, size_t n, tr_buf_t **out);

/*
 * Decodes a RegistryEntries payload (NULL: the empty list).  An entry's
 * uuid is 16 bytes, or, unless need_uuid, absent (then all zero: a lookup
 * by name names no uuid).  Returns 0 with *v (NULL when empty) and *n, or
 * -TR_EMSGTYPE (not a RegistryEntries, or a uuid of another length) /
 * -TR_ENOMEM, with an error object.
 * Ownership: borrows b; *v is the caller's (tr_registry_entries_free).
 * Threads: any.
 */
int tr__reg_unpack(const tr_buf_t *b, int need_uuid, tr_registry_entry_t **v, size_t *n);

#endif
