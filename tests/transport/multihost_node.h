/*
 * What tests/transport/multihost_node.c and its test
 * (tests/transport/test_multihost.c) agree on: the port of the registrar
 * inside the namespace hosts, and the exit status of each way the program
 * can end, so that a failing run says which check failed.
 */
#ifndef TR_TESTS_TRANSPORT_MULTIHOST_NODE_H
#define TR_TESTS_TRANSPORT_MULTIHOST_NODE_H

/* The registrar's port.  Every net of namespaces is private, so a fixed
 * port collides with nothing, not even with a parallel run of this test. */
#define MH_PORT 7412

/* Values the client streams through mh.count. */
#define MH_STREAM_N 10000

/* How long a registrar or server node serves before it gives up and exits
 * with MH_EXIT_LIFETIME: a test that forgets to stop it does not leave it
 * running forever (the test's own fini kills it much earlier). */
#define MH_LIFETIME_MS 60000

enum mh_exit {
  MH_EXIT_OK = 0,
  MH_EXIT_USAGE = 2,        /* unknown mode or arguments */
  MH_EXIT_EPERM = 3,        /* tr_main refused to start: -TR_EPERM (a wrong secret) */
  MH_EXIT_START = 4,        /* tr_main failed otherwise, or the node is not what it should be */
  MH_EXIT_NOTFOUND = 5,     /* the named actor was not found in time */
  MH_EXIT_RPC = 6,          /* mh.pid failed or answered this process's pid */
  MH_EXIT_BOXING = 7,       /* mh.fail did not come back as the expected boxed error */
  MH_EXIT_STREAM = 8,       /* the stream of mh.count was short, out of order or failed */
  MH_EXIT_CANCEL = 9,       /* cancelling mh.forever was slow or did not reach the callee */
  MH_EXIT_CTX_CANCEL = 10,  /* cancelling a context mid-stream was not acknowledged */
  MH_EXIT_PARTITION = 11,   /* the partitioned stream did not end with -TR_EIO */
  MH_EXIT_STILL_FOUND = 12, /* after the partition the registry still answers the name */
  MH_EXIT_LIFETIME = 13,    /* served MH_LIFETIME_MS without being stopped */
  MH_EXIT_SERVE = 14,       /* the server's daemon could not be started or failed */
};

#endif
