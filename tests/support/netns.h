/*
 * Several "hosts" on one machine, for multi-host tests: Linux network
 * namespaces joined by veth pairs to a bridge.
 *
 * tr_netns_create(net, n) makes n host namespaces and one "switch"
 * namespace that holds a bridge, br0.  Host i gets lo up and eth0, one end
 * of a veth pair whose other end (p<i>) is a port of br0, with the address
 * 198.51.100.(10+i)/24 (TEST-NET-2, a documentation range).  Nothing is
 * added to the namespace the test runs in: the addresses, links and the
 * only route (the /24 on eth0) exist inside the namespaces, and no host has
 * a route out of the /24.
 *
 * Every namespace is named trns<pid>_<seq>_<i> (the switch: ..._s), with
 * the creating process's pid and a per-process sequence number, so parallel
 * test processes (ctest -j) and several nets in one process never collide;
 * tr_netns_sweep removes those a dead process left behind.
 *
 * All changes go through the `ip` program of iproute2, run with
 * posix_spawn, its output captured (never on the test's stdout) and its
 * exit status checked.  That needs root (or CAP_SYS_ADMIN and
 * CAP_NET_ADMIN): tests call tr_netns_available first and cr_skip with its
 * reason when it says no.
 *
 * Errors are negative errno values.  An `ip` command that ran and failed is
 * -EIO; tr_netns_error then names the command and quotes its stderr.
 */
#ifndef TR_TESTS_SUPPORT_NETNS_H
#define TR_TESTS_SUPPORT_NETNS_H

#include <stddef.h>
#include <sys/types.h>

#define TR_NETNS_MIN_HOSTS 2
#define TR_NETNS_MAX_HOSTS 4
/* The switch namespace, for tr_netns_name. */
#define TR_NETNS_SWITCH (-1)

/* One net of hosts.  The fields are the module's; read them through the
 * functions below. */
typedef struct tr_netns_net {
  int n_hosts;
  /* Namespaces this net made and has not deleted: bit i for host i, bit
   * TR_NETNS_MAX_HOSTS for the switch.  Destroy deletes exactly these. */
  unsigned made;
  char name[TR_NETNS_MAX_HOSTS + 1][40]; /* [TR_NETNS_MAX_HOSTS]: the switch */
  char addr[TR_NETNS_MAX_HOSTS][16];
  char err[512];
} tr_netns_net_t;

/* 1 when this process can make the namespaces: it runs as root or holds
 * CAP_SYS_ADMIN, iproute2's `ip` is installed, and a throw-away namespace
 * with a bridge and a veth pair in it can really be made and deleted.
 * Otherwise 0, with a one-line reason in why (when why is not NULL).
 * Costs a handful of `ip` runs (a few ms each).
 * Ownership: why is the caller's.
 * Threads: any. */
int tr_netns_available(char *why, size_t len);

/* Makes a net of n_hosts hosts (TR_NETNS_MIN_HOSTS..TR_NETNS_MAX_HOSTS), as
 * described at the top of this file, after sweeping namespaces left by dead
 * processes (tr_netns_sweep).  Returns 0, -EINVAL for a bad n_hosts, or
 * another negative errno (-EIO: an `ip` command failed); on failure
 * everything made so far is deleted again, and tr_netns_error says why.
 * Ownership: *net is the caller's (it may live on the stack); it holds no
 * heap memory and no fd, only the namespaces, which tr_netns_destroy
 * deletes.  *net is overwritten: destroy a net before making another in
 * the same struct, or its namespaces are forgotten (until a sweep after
 * this process exits).
 * Threads: any; two calls never share a name. */
int tr_netns_create(tr_netns_net_t *net, int n_hosts);

/* The last failure's message ("" if none): the `ip` command line, its exit
 * status and its stderr, or the system call that failed.
 * Ownership: net's; valid until the next call on net.
 * Threads: not while another thread changes net. */
const char *tr_netns_error(const tr_netns_net_t *net);

/* Host i's address, "198.51.100.(10+i)"; NULL if i is not a host.
 * Ownership: net's, valid while net is.  Threads: any. */
const char *tr_netns_addr(const tr_netns_net_t *net, int i);

/* Host i's namespace name (for `ip netns exec`, /run/netns/<name>), or the
 * switch's for TR_NETNS_SWITCH; NULL if i is neither.
 * Ownership: net's, valid while net is.  Threads: any. */
const char *tr_netns_name(const tr_netns_net_t *net, int i);

/* Moves the calling thread into host i's network namespace (setns
 * CLONE_NEWNET).  Only this thread moves; sockets it opens afterwards
 * belong to host i, and so do threads it creates afterwards (they inherit
 * it), so call it before starting a runtime whose workers should live in
 * the host.  There is no way back short of a saved fd of the old
 * namespace: Criterion runs each test in a process of its own, so a test
 * may simply enter a host and stay.  Returns 0 or a negative errno.
 * Threads: moves the calling thread only. */
int tr_netns_enter(const tr_netns_net_t *net, int i);

/* Starts argv[0] (a path, or a name looked up in PATH) in host i, with
 * envp (NULL: this process's environment), and stores its pid in *pid.
 * The child joins host i's namespace before exec, and asks for SIGKILL
 * when the thread that called this exits (PR_SET_PDEATHSIG), so no child
 * outlives a test process that crashes; call it from a thread that
 * outlives the child (the test's own thread).  A child that cannot join
 * the namespace or exec reports its errno through a close-on-exec pipe:
 * the call then reaps it and returns that error (-ENOENT for a missing
 * program), leaving no child behind.  On success the caller reaps *pid
 * (waitpid).
 * Ownership: argv and envp stay the caller's.
 * Threads: fork()s; the child only makes async-signal-safe calls
 * (execvpe's PATH search aside) before exec. */
int tr_netns_spawn(const tr_netns_net_t *net, int i, char *const argv[], char *const envp[],
                   pid_t *pid);

/* As tr_netns_spawn, with the child's standard output on out_fd (dup2'd
 * to its fd 1; -1 leaves it this process's), so that a test can read what
 * the child prints through a pipe, with poll's deadlines.  Make the pipe
 * with both ends close-on-exec (pipe2 O_CLOEXEC): the child then holds
 * only its fd 1 (dup2 clears the flag there), and the reader sees EOF once
 * the child, and whatever it started with the same stdout, has exited.
 * Ownership: out_fd stays the caller's (close it once spawned, so that
 * the child holds the only write end); argv and envp as tr_netns_spawn.
 * Threads: as tr_netns_spawn. */
int tr_netns_spawn_out(const tr_netns_net_t *net, int i, char *const argv[], char *const envp[],
                       int out_fd, pid_t *pid);

/* Takes host i's link down (up = 0) or up again (up = 1): eth0 in the host
 * and its port p<i> on the bridge both, so nothing passes either way while
 * it is down.  While down, host i has no route to the /24 (a connect fails
 * at once with ENETUNREACH) and packets to it are dropped at the switch.
 * Up again restores the route; the first connect may wait for ARP.
 * Returns 0 or a negative errno (tr_netns_error says why).
 * Threads: not concurrently with other calls on net. */
int tr_netns_link(tr_netns_net_t *net, int i, int up);

/* Deletes every namespace net made and has not deleted yet, hosts first,
 * then the switch (with it the bridge and the veth pairs).  Idempotent, and
 * safe on a net whose create failed or on a zeroed one.  A process still
 * inside a deleted namespace (a spawned child, a thread that entered it)
 * keeps that namespace alive, unnamed, until it exits.  A failed delete is
 * recorded in tr_netns_error; the namespace is then forgotten all the same
 * (tr_netns_sweep will find it once this process is gone).
 * Threads: not concurrently with other calls on net. */
void tr_netns_destroy(tr_netns_net_t *net);

/* Deletes namespaces named trns<pid>_* whose pid no longer exists (runs
 * that crashed before their destroy).  Namespaces of live processes,
 * including this one, are left alone.  A pid that was reused since is taken
 * as alive: that leftover waits for a later sweep.  Errors are ignored.
 * Threads: any. */
void tr_netns_sweep(void);

/* Runs `ip` with the given arguments (a NULL-terminated list), its stdout
 * and stderr captured into out (NUL-terminated, truncated to len; out may
 * be NULL).  Returns 0 when ip exited with status 0, -EIO when it ran and
 * failed (out then holds its output), or another negative errno when it
 * could not be run.  For tests that need more than the calls above
 * (`ip -n <name> addr show`, ...).
 * Threads: any (posix_spawn). */
int tr_netns_ip(char *out, size_t len, ...) __attribute__((sentinel));

/* 1 when `ip netns list` shows the namespace name, 0 when not, or a
 * negative errno when ip could not be run.
 * Threads: any. */
int tr_netns_listed(const char *name);

#endif
