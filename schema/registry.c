/*
 * Registry payloads (see registry.h).
 */
#include "schema/registry.h"

#include <stdlib.h>
#include <string.h>

#include "runtime/error/error.h"
#include "schema/tractor.pb-c.h"

int tr__reg_pack(const tr_registry_entry_t *v, size_t n, tr_buf_t **out) {
  *out = NULL;
  if (n == 0)
    return 0;
  Tractor__RegistryEntry *e = calloc(n, sizeof *e);
  Tractor__RegistryEntry **pe = calloc(n, sizeof *pe);
  int rc = 0;
  if (!e || !pe) {
    rc = TR__ENOMEM();
    goto out;
  }
  for (size_t i = 0; i < n; i++) {
    if (!v[i].name) {
      rc = TR_ERROR(-TR_EINVAL, "a registry entry without a name");
      goto out;
    }
    tractor__registry_entry__init(&e[i]);
    e[i].name = v[i].name;
    e[i].uuid.len = sizeof v[i].uuid;
    e[i].uuid.data = (uint8_t *)v[i].uuid;
    e[i].addr = v[i].addr ? v[i].addr : (char *)"";
    e[i].pid = v[i].pid;
    pe[i] = &e[i];
  }
  Tractor__RegistryEntries all = TRACTOR__REGISTRY_ENTRIES__INIT;
  all.n_entries = n;
  all.entries = pe;
  size_t len = tractor__registry_entries__get_packed_size(&all);
  tr_buf_t *b;
  if ((rc = tr_buf_new(len, &b)) != 0)
    goto out;
  tractor__registry_entries__pack(&all, tr_buf_wdata(b));
  *out = b;
out:
  free(e);
  free(pe);
  return rc;
}

int tr__reg_unpack(const tr_buf_t *b, int need_uuid, tr_registry_entry_t **v, size_t *n) {
  *v = NULL;
  *n = 0;
  if (!b || tr_buf_len(b) == 0)
    return 0;
  Tractor__RegistryEntries *all =
      tractor__registry_entries__unpack(NULL, tr_buf_len(b), tr_buf_data(b));
  if (!all)
    return TR_ERROR(-TR_EMSGTYPE, "a registry payload that is not a RegistryEntries (%zu bytes)",
                    tr_buf_len(b));
  int rc = 0;
  tr_registry_entry_t *out = all->n_entries ? calloc(all->n_entries, sizeof *out) : NULL;
  if (all->n_entries && !out) {
    rc = TR__ENOMEM();
    goto done;
  }
  for (size_t i = 0; i < all->n_entries; i++) {
    const Tractor__RegistryEntry *e = all->entries[i];
    if (e->uuid.len != sizeof out[i].uuid && (need_uuid || e->uuid.len != 0)) {
      rc = TR_ERROR(-TR_EMSGTYPE, "a registry entry whose uuid has %zu bytes, not 16%s",
                    e->uuid.len, need_uuid ? "" : " (or none)");
      break;
    }
    if (e->uuid.len) /* else all zero (calloc) */
      memcpy(out[i].uuid, e->uuid.data, sizeof out[i].uuid);
    out[i].pid = e->pid;
    if (!(out[i].name = strdup(e->name ? e->name : "")) ||
        !(out[i].addr = strdup(e->addr ? e->addr : ""))) {
      rc = TR__ENOMEM();
      break;
    }
  }
  if (rc == 0) {
    *v = out;
    *n = all->n_entries;
  } else {
    tr_registry_entries_free(out, all->n_entries);
  }
done:
  tractor__registry_entries__free_unpacked(all, NULL);
  return rc;
}

void tr_registry_entries_free(tr_registry_entry_t *entries, size_t n) {
  for (size_t i = 0; entries && i < n; i++) {
    free(entries[i].name);
    free(entries[i].addr);
  }
  free(entries);
}
