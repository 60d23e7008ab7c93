/*
 * tractor-registry: a standalone registrar (docs/OPERATIONS.md).
 *
 *     tractor-registry [--addr HOST:PORT] [--secret S | --secret-file F] [-v|-vv|-q]
 *
 * Listens on the registry address (default TR_REGISTRY_ADDR, else
 * 127.0.0.1:1616) and serves the registry until SIGTERM or SIGINT, then
 * exits 0.  Exits 1 when it cannot be the registrar there: a registrar
 * already answers, or something else holds the port (the reason is
 * logged on stderr).  Nodes started on that address register here instead
 * of becoming the registrar themselves.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <tractor/tractor.h>

static int serve(void *arg) {
  (void)arg;
  char addr[64];
  int registrar = 0;
  int rc = tr_node_addr(addr, sizeof addr, &registrar);
  if (rc == 0 && !registrar) /* main prints it, once */
    return TR_ERROR(-TR_EBUSY, "a registrar already answers at %s",
                    getenv("TR_REGISTRY_ADDR") ? getenv("TR_REGISTRY_ADDR")
                                               : "the registry address");
  if (rc)
    return rc;
  tr_log(TR_LOG_INFO, "tractor-registry: serving the registry at %s", addr);
  while ((rc = tr_sleep(3600LL * 1000000000LL)) == 0)
    ;
  return 0;
}

static void usage(FILE *f) {
  fprintf(f, "usage: tractor-registry [--addr HOST:PORT] [--secret S | --secret-file F] "
             "[-v|-vv|-q]\n");
}

int main(int argc, char **argv) {
  tr_config_t cfg = {.workers = 1, .log_level = TR_LOG_WARN};
  int secrets = 0; /* --secret and --secret-file are alternatives */
  for (int i = 1; i < argc; i++) {
    const char *a = argv[i];
    if (strcmp(a, "--addr") == 0 && i + 1 < argc) {
      setenv("TR_REGISTRY_ADDR", argv[++i], 1); /* the environment wins over the config */
    } else if (strcmp(a, "--secret") == 0 && i + 1 < argc) {
      cfg.secret = argv[++i];
      secrets++;
      unsetenv("TR_SECRET"); /* the flag wins over the environment */
      unsetenv("TR_SECRET_FILE");
    } else if (strcmp(a, "--secret-file") == 0 && i + 1 < argc) {
      setenv("TR_SECRET_FILE", argv[++i], 1);
      secrets++;
      unsetenv("TR_SECRET");
    } else if (strcmp(a, "-v") == 0) {
      cfg.log_level = TR_LOG_INFO;
    } else if (strcmp(a, "-vv") == 0) {
      cfg.log_level = TR_LOG_DEBUG;
    } else if (strcmp(a, "-q") == 0) {
      cfg.log_level = -1;
    } else if (strcmp(a, "-h") == 0 || strcmp(a, "--help") == 0) {
      usage(stdout);
      return 0;
    } else {
      usage(stderr);
      return 2;
    }
  }
  if (secrets > 1) {
    fprintf(stderr, "tractor-registry: give one secret: --secret or --secret-file\n");
    usage(stderr);
    return 2;
  }
  const char *reg = getenv("TR_REGISTRY_ADDR");
  if (reg && strcmp(reg, "off") == 0) {
    fprintf(stderr, "tractor-registry: the registry address is \"off\"\n");
    return 2;
  }
  int rc = tr_main(argc, argv, serve, NULL, &cfg);
  if (rc == -TR_ECANCELED)
    return 0; /* SIGTERM or SIGINT: a clean exit */
  if (rc) {
    const tr_error_t *e = tr_error_last();
    fprintf(stderr, "tractor-registry: %s\n", e ? tr_error_message(e) : tr_strerror(rc));
  }
  return rc ? 1 : 0;
}
