/*
 * Network namespaces as test hosts (netns.h).
 *
 * Every change is an `ip` command: iproute2 already knows how to name a
 * namespace (a bind mount under /var/run/netns), how to run a command in
 * one (ip -n) and how to move a veth end into another; doing the same with
 * netlink here would be a few hundred lines of code to get wrong.  The cost
 * is a posix_spawn per step, 3-5 ms each: a net of 3 hosts is about 20
 * commands.
 */
#define _GNU_SOURCE
#include "netns.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <sched.h>
#include <signal.h>
#include <spawn.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

extern char **environ;

/* Where `ip netns add` names namespaces (iproute2's NETNS_RUN_DIR). */
#define RUN_DIR "/var/run/netns"
#define PREFIX "trns"
#define MAX_ARGS 24
#define SWITCH_BIT (1u << TR_NETNS_MAX_HOSTS)

/* Names made by this process: one number per create (and per probe), so
 * two nets of one process never share a name. */
static unsigned next_seq(void) {
  static unsigned seq;
  /* A plain counter; nothing else is ordered by it. */
  return __atomic_fetch_add(&seq, 1, __ATOMIC_RELAXED);
}

/* ---- running ip ------------------------------------------------------------------------ */

/* Finds iproute2's ip: in PATH, then in the sbin directories, which a
 * non-login root shell's PATH may lack.  Returns 0 with the path in buf. */
static int find_ip(char *buf, size_t len) {
  const char *path = getenv("PATH");
  const char *fallback = "/usr/sbin:/sbin:/usr/bin:/bin";
  for (int pass = 0; pass < 2; pass++) {
    const char *p = pass == 0 ? path : fallback;
    while (p && *p) {
      const char *colon = strchr(p, ':');
      size_t n = colon ? (size_t)(colon - p) : strlen(p);
      if (n > 0 && (size_t)snprintf(buf, len, "%.*s/ip", (int)n, p) < len && access(buf, X_OK) == 0)
        return 0;
      p = colon ? colon + 1 : NULL;
    }
  }
  return -ENOENT;
}

/* Runs ip with args (NULL-terminated, without argv[0]), stdin from
 * /dev/null, stdout and stderr both into out (truncated, NUL-terminated).
 * Returns 0 for exit status 0, -EIO for another status or a signal (*status
 * holds the wait status), or a negative errno when ip could not run (out
 * then says which call failed). */
static int run_ip(char *out, size_t outlen, int *status, const char *const *args) {
  char scratch[1];
  if (!out || outlen == 0) {
    out = scratch;
    outlen = sizeof scratch;
  }
  out[0] = '\0';
  *status = 0;

  char prog[256];
  if (find_ip(prog, sizeof prog) != 0) {
    snprintf(out, outlen, "the ip program (iproute2) is not installed");
    return -ENOENT;
  }
  const char *argv[MAX_ARGS + 2];
  size_t argc = 0;
  argv[argc++] = "ip";
  for (size_t i = 0; args[i]; i++) {
    if (argc == MAX_ARGS + 1) {
      snprintf(out, outlen, "too many arguments for ip");
      return -E2BIG;
    }
    argv[argc++] = args[i];
  }
  argv[argc] = NULL;

  /* Both ends close-on-exec: ip gets the write end only as its fds 1 and 2
   * (dup2 clears the flag there), and no other child of this process
   * inherits either end. */
  int p[2];
  if (pipe2(p, O_CLOEXEC) != 0) {
    int e = errno;
    snprintf(out, outlen, "pipe2: %s", strerror(e));
    return -e;
  }
  posix_spawn_file_actions_t fa;
  posix_spawnattr_t at;
  posix_spawn_file_actions_init(&fa);
  posix_spawn_file_actions_addopen(&fa, 0, "/dev/null", O_RDONLY, 0);
  posix_spawn_file_actions_adddup2(&fa, p[1], 1);
  posix_spawn_file_actions_adddup2(&fa, p[1], 2);
  posix_spawnattr_init(&at);
  /* ip starts with no signal blocked and SIGPIPE at its default, whatever
   * the test process (or Criterion) did to its own. */
  sigset_t none, pipe_only;
  sigemptyset(&none);
  sigemptyset(&pipe_only);
  sigaddset(&pipe_only, SIGPIPE);
  posix_spawnattr_setsigmask(&at, &none);
  posix_spawnattr_setsigdefault(&at, &pipe_only);
  posix_spawnattr_setflags(&at, POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF);
  pid_t pid;
  int rc = posix_spawn(&pid, prog, &fa, &at, (char *const *)argv, environ);
  posix_spawn_file_actions_destroy(&fa);
  posix_spawnattr_destroy(&at);
  close(p[1]);
  if (rc != 0) {
    close(p[0]);
    snprintf(out, outlen, "posix_spawn %s: %s", prog, strerror(rc));
    return -rc;
  }

  /* Read to EOF (ip exits, or closes both fds), keeping what fits. */
  size_t used = 0;
  for (;;) {
    char chunk[512];
    ssize_t n = read(p[0], chunk, sizeof chunk);
    if (n < 0 && errno == EINTR)
      continue;
    if (n <= 0)
      break;
    size_t keep = (size_t)n < outlen - 1 - used ? (size_t)n : outlen - 1 - used;
    memcpy(out + used, chunk, keep);
    used += keep;
  }
  out[used] = '\0';
  close(p[0]);

  int st;
  while (waitpid(pid, &st, 0) < 0) {
    if (errno != EINTR) {
      int e = errno;
      snprintf(out, outlen, "waitpid: %s", strerror(e));
      return -e;
    }
  }
  *status = st;
  return WIFEXITED(st) && WEXITSTATUS(st) == 0 ? 0 : -EIO;
}

/* Collects a NULL-terminated vararg list of strings into args. */
static int collect(const char **args, va_list ap) {
  size_t n = 0;
  const char *a;
  while ((a = va_arg(ap, const char *))) {
    if (n == MAX_ARGS)
      return -E2BIG;
    args[n++] = a;
  }
  args[n] = NULL;
  return 0;
}

/* Formats a failed run into msg: the command line, how it ended, and its
 * output on one line. */
static void describe(char *msg, size_t len, const char *const *args, int rc, int status,
                     const char *output) {
  size_t used = (size_t)snprintf(msg, len, "`ip");
  for (size_t i = 0; args[i] && used < len; i++)
    used += (size_t)snprintf(msg + used, len - used, " %s", args[i]);
  if (used < len) {
    if (rc == -EIO && WIFEXITED(status))
      used += (size_t)snprintf(msg + used, len - used,
                               "` exited with status %d: ", WEXITSTATUS(status));
    else if (rc == -EIO && WIFSIGNALED(status))
      used +=
          (size_t)snprintf(msg + used, len - used, "` was killed by signal %d: ", WTERMSIG(status));
    else
      used += (size_t)snprintf(msg + used, len - used, "` could not run: ");
  }
  if (used < len)
    snprintf(msg + used, len - used, "%s", output);
  /* One line: the output's newlines become spaces, the last one goes. */
  for (char *c = msg; *c; c++)
    if (*c == '\n')
      *c = ' ';
  size_t n = strlen(msg);
  while (n > 0 && msg[n - 1] == ' ')
    msg[--n] = '\0';
}

/* Runs ip for net; on failure net->err describes it. */
static int net_ip(tr_netns_net_t *net, ...) {
  const char *args[MAX_ARGS + 1];
  va_list ap;
  va_start(ap, net);
  int rc = collect(args, ap);
  va_end(ap);
  if (rc != 0) {
    snprintf(net->err, sizeof net->err, "too many arguments for ip");
    return rc;
  }
  char output[400];
  int status;
  rc = run_ip(output, sizeof output, &status, args);
  if (rc != 0)
    describe(net->err, sizeof net->err, args, rc, status, output);
  return rc;
}

int tr_netns_ip(char *out, size_t len, ...) {
  const char *args[MAX_ARGS + 1];
  va_list ap;
  va_start(ap, len);
  int rc = collect(args, ap);
  va_end(ap);
  if (rc != 0)
    return rc;
  int status;
  return run_ip(out, len, &status, args);
}

int tr_netns_listed(const char *name) {
  /* `ip netns list` prints "name" or "name (id: N)", one a line. */
  char out[8192];
  int rc = tr_netns_ip(out, sizeof out, "netns", "list", (char *)NULL);
  if (rc != 0)
    return rc;
  size_t n = strlen(name);
  for (const char *line = out; *line;) {
    if (strncmp(line, name, n) == 0 && (line[n] == '\0' || line[n] == '\n' || line[n] == ' '))
      return 1;
    const char *nl = strchr(line, '\n');
    if (!nl)
      break;
    line = nl + 1;
  }
  return 0;
}

/* ---- availability ---------------------------------------------------------------------- */

/* CAP_SYS_ADMIN (bit 21) in this process's effective set. */
static int has_sys_admin(void) {
  FILE *f = fopen("/proc/self/status", "re");
  if (!f)
    return 0;
  char line[256];
  unsigned long long eff = 0;
  int found = 0;
  while (fgets(line, sizeof line, f))
    if (sscanf(line, "CapEff: %llx", &eff) == 1) {
      found = 1;
      break;
    }
  fclose(f);
  return found && (eff >> 21 & 1);
}

int tr_netns_available(char *why, size_t len) {
  char scratch[1];
  if (!why || len == 0) {
    why = scratch;
    len = sizeof scratch;
  }
  why[0] = '\0';
  if (geteuid() != 0 && !has_sys_admin()) {
    snprintf(why, len, "network namespaces need root or CAP_SYS_ADMIN (euid %d)", (int)geteuid());
    return 0;
  }
  char prog[256];
  if (find_ip(prog, sizeof prog) != 0) {
    snprintf(why, len, "the ip program (iproute2) is not installed (tools/setup.sh installs it)");
    return 0;
  }
  /* BusyBox's ip has no netns; say so rather than fail below. */
  char out[256];
  if (tr_netns_ip(out, sizeof out, "-V", (char *)NULL) != 0 || !strstr(out, "iproute2")) {
    snprintf(why, len, "%s is not iproute2's ip", prog);
    return 0;
  }

  tr_netns_net_t probe;
  memset(&probe, 0, sizeof probe);
  snprintf(probe.name[0], sizeof probe.name[0], PREFIX "%ld_%u_probe", (long)getpid(), next_seq());
  const char *ns = probe.name[0];
  int ok = net_ip(&probe, "netns", "add", ns, (char *)NULL) == 0;
  if (ok) {
    /* What create needs: a bridge and a veth pair (kernel modules that a
     * container's kernel may lack). */
    ok = net_ip(&probe, "-n", ns, "link", "add", "br0", "type", "bridge", (char *)NULL) == 0 &&
         net_ip(&probe, "-n", ns, "link", "add", "v0", "type", "veth", "peer", "name", "v1",
                (char *)NULL) == 0;
    /* The delete runs either way; its error is the reason only when all
     * else went well. */
    char first[sizeof probe.err];
    memcpy(first, probe.err, sizeof first);
    int deleted = net_ip(&probe, "netns", "delete", ns, (char *)NULL) == 0;
    if (!ok)
      memcpy(probe.err, first, sizeof first);
    ok = ok && deleted;
  }
  if (!ok) {
    snprintf(why, len, "cannot make a network namespace here: %s", probe.err);
    return 0;
  }
  return 1;
}

/* ---- sweep ----------------------------------------------------------------------------- */

void tr_netns_sweep(void) {
  DIR *d = opendir(RUN_DIR);
  if (!d)
    return;
  /* Names first, deletes after: ip changes the directory being read. */
  char dead[64][40];
  int n = 0;
  struct dirent *e;
  while (n < 64 && (e = readdir(d))) {
    const char *s = e->d_name;
    if (strncmp(s, PREFIX, strlen(PREFIX)) != 0 || strlen(s) >= sizeof dead[0])
      continue;
    char *end;
    long pid = strtol(s + strlen(PREFIX), &end, 10);
    if (end == s + strlen(PREFIX) || *end != '_' || pid <= 0 || pid == (long)getpid())
      continue;
    if (kill((pid_t)pid, 0) != 0 && errno == ESRCH)
      memcpy(dead[n++], s, strlen(s) + 1); /* fits: checked above */
  }
  closedir(d);
  for (int i = 0; i < n; i++)
    (void)tr_netns_ip(NULL, 0, "netns", "delete", dead[i], (char *)NULL);
}

/* ---- the net --------------------------------------------------------------------------- */

static int is_host(const tr_netns_net_t *net, int i) {
  return net && i >= 0 && i < net->n_hosts && i < TR_NETNS_MAX_HOSTS;
}

const char *tr_netns_error(const tr_netns_net_t *net) { return net ? net->err : ""; }

const char *tr_netns_addr(const tr_netns_net_t *net, int i) {
  return is_host(net, i) ? net->addr[i] : NULL;
}

const char *tr_netns_name(const tr_netns_net_t *net, int i) {
  if (net && i == TR_NETNS_SWITCH && net->n_hosts > 0)
    return net->name[TR_NETNS_MAX_HOSTS];
  return is_host(net, i) ? net->name[i] : NULL;
}

/* Deletes the namespaces in mask that net made; keeps the first error. */
static void delete_made(tr_netns_net_t *net, unsigned mask) {
  for (int b = 0; b <= TR_NETNS_MAX_HOSTS; b++) {
    unsigned bit = 1u << b;
    if (!(net->made & bit & mask))
      continue;
    char keep[sizeof net->err];
    memcpy(keep, net->err, sizeof keep);
    if (net_ip(net, "netns", "delete", net->name[b], (char *)NULL) != 0 && keep[0])
      memcpy(net->err, keep, sizeof keep); /* the earlier error explains more */
    net->made &= ~bit;
  }
}

void tr_netns_destroy(tr_netns_net_t *net) {
  if (!net)
    return;
  /* Hosts first: the veth pairs go with whichever end's namespace goes
   * first, the bridge with the switch. */
  delete_made(net, SWITCH_BIT - 1);
  delete_made(net, SWITCH_BIT);
}

static int add_ns(tr_netns_net_t *net, int b) {
  int rc = net_ip(net, "netns", "add", net->name[b], (char *)NULL);
  if (rc == 0)
    net->made |= 1u << b;
  return rc;
}

/* Host i: eth0 paired with the switch's p<i>, on the bridge, addressed. */
static int wire_host(tr_netns_net_t *net, int i) {
  const char *h = net->name[i], *sw = net->name[TR_NETNS_MAX_HOSTS];
  char port[8], cidr[24];
  snprintf(port, sizeof port, "p%d", i);
  snprintf(cidr, sizeof cidr, "%s/24", net->addr[i]);
  int rc;
  /* The pair is made inside the host namespace and one end moved to the
   * switch, so no interface ever appears in the caller's namespace. */
  if ((rc = net_ip(net, "-n", h, "link", "add", "eth0", "type", "veth", "peer", "name", port,
                   "netns", sw, (char *)NULL)) != 0 ||
      (rc = net_ip(net, "-n", sw, "link", "set", port, "master", "br0", "up", (char *)NULL)) != 0 ||
      (rc = net_ip(net, "-n", h, "addr", "add", cidr, "dev", "eth0", (char *)NULL)) != 0 ||
      (rc = net_ip(net, "-n", h, "link", "set", "eth0", "up", (char *)NULL)) != 0 ||
      (rc = net_ip(net, "-n", h, "link", "set", "lo", "up", (char *)NULL)) != 0)
    return rc;
  return 0;
}

int tr_netns_create(tr_netns_net_t *net, int n_hosts) {
  if (!net)
    return -EINVAL;
  memset(net, 0, sizeof *net);
  if (n_hosts < TR_NETNS_MIN_HOSTS || n_hosts > TR_NETNS_MAX_HOSTS) {
    snprintf(net->err, sizeof net->err, "a net has %d to %d hosts, not %d", TR_NETNS_MIN_HOSTS,
             TR_NETNS_MAX_HOSTS, n_hosts);
    return -EINVAL;
  }
  tr_netns_sweep();

  net->n_hosts = n_hosts;
  unsigned seq = next_seq();
  long pid = (long)getpid();
  for (int i = 0; i < n_hosts; i++) {
    snprintf(net->name[i], sizeof net->name[i], PREFIX "%ld_%u_%d", pid, seq, i);
    snprintf(net->addr[i], sizeof net->addr[i], "198.51.100.%d", 10 + i);
  }
  snprintf(net->name[TR_NETNS_MAX_HOSTS], sizeof net->name[0], PREFIX "%ld_%u_s", pid, seq);

  int rc = add_ns(net, TR_NETNS_MAX_HOSTS);
  /* STP off (the default, said out loud): a port then forwards as soon as
   * its link is up, instead of after two forward delays (30 s). */
  if (rc == 0)
    rc = net_ip(net, "-n", net->name[TR_NETNS_MAX_HOSTS], "link", "add", "br0", "type", "bridge",
                "stp_state", "0", (char *)NULL);
  if (rc == 0)
    rc = net_ip(net, "-n", net->name[TR_NETNS_MAX_HOSTS], "link", "set", "br0", "up", (char *)NULL);
  for (int i = 0; rc == 0 && i < n_hosts; i++)
    if ((rc = add_ns(net, i)) == 0)
      rc = wire_host(net, i);
  if (rc != 0) {
    tr_netns_destroy(net); /* keeps net->err, the first failure */
    return rc;
  }
  return 0;
}

/* Opens host i's namespace file, close-on-exec.  Returns the fd or a
 * negative errno. */
static int open_host(const tr_netns_net_t *net, int i) {
  if (!is_host(net, i) || !(net->made & 1u << i))
    return -EINVAL;
  char path[sizeof RUN_DIR + 48];
  snprintf(path, sizeof path, RUN_DIR "/%s", net->name[i]);
  int fd = open(path, O_RDONLY | O_CLOEXEC);
  return fd < 0 ? -errno : fd;
}

int tr_netns_enter(const tr_netns_net_t *net, int i) {
  int fd = open_host(net, i);
  if (fd < 0)
    return fd;
  int rc = setns(fd, CLONE_NEWNET) == 0 ? 0 : -errno;
  close(fd);
  return rc;
}

int tr_netns_spawn(const tr_netns_net_t *net, int i, char *const argv[], char *const envp[],
                   pid_t *pid) {
  return tr_netns_spawn_out(net, i, argv, envp, -1, pid);
}

int tr_netns_spawn_out(const tr_netns_net_t *net, int i, char *const argv[], char *const envp[],
                       int out_fd, pid_t *pid) {
  if (!argv || !argv[0] || !pid || out_fd < -1)
    return -EINVAL;
  int nsfd = open_host(net, i);
  if (nsfd < 0)
    return nsfd;
  int p[2];
  if (pipe2(p, O_CLOEXEC) != 0) {
    int e = errno;
    close(nsfd);
    return -e;
  }
  char *const *env = envp ? envp : environ;
  pid_t parent = getpid();
  pid_t c = fork();
  if (c < 0) {
    int e = errno;
    close(nsfd);
    close(p[0]);
    close(p[1]);
    return -e;
  }
  if (c == 0) {
    /* The child: only async-signal-safe calls until exec (the parent may
     * have other threads, whose locks are copied held). */
    int e = 0;
    sigset_t none;
    sigemptyset(&none);
    if (prctl(PR_SET_PDEATHSIG, SIGKILL) != 0)
      e = errno;
    else if (getppid() != parent)
      _exit(127); /* the parent died before the prctl: nobody waits for us */
    else if (setns(nsfd, CLONE_NEWNET) != 0)
      e = errno;
    else if (out_fd >= 0 && out_fd != 1 && dup2(out_fd, 1) < 0)
      e = errno;
    else {
      sigprocmask(SIG_SETMASK, &none, NULL);
      if (strchr(argv[0], '/'))
        execve(argv[0], argv, env);
      else
        execvpe(argv[0], argv, env);
      e = errno;
    }
    /* Exec failed: the parent reads e; on success the pipe just closes. */
    ssize_t w = write(p[1], &e, sizeof e);
    (void)w;
    _exit(127);
  }
  close(nsfd);
  close(p[1]);
  int e = 0;
  ssize_t n;
  while ((n = read(p[0], &e, sizeof e)) < 0 && errno == EINTR) {
  }
  close(p[0]);
  if (n == (ssize_t)sizeof e) {
    while (waitpid(c, NULL, 0) < 0 && errno == EINTR) {
    }
    return e > 0 ? -e : -ECHILD;
  }
  *pid = c;
  return 0;
}

int tr_netns_link(tr_netns_net_t *net, int i, int up) {
  if (!is_host(net, i) || !(net->made & 1u << i))
    return -EINVAL;
  const char *h = net->name[i], *sw = net->name[TR_NETNS_MAX_HOSTS];
  const char *state = up ? "up" : "down";
  char port[8];
  snprintf(port, sizeof port, "p%d", i);
  net->err[0] = '\0';
  /* Up: the switch's end first, so that the host's eth0 has carrier (and
   * its route is usable) as soon as it is up. */
  int rc;
  if (up)
    rc = net_ip(net, "-n", sw, "link", "set", port, state, (char *)NULL);
  else
    rc = net_ip(net, "-n", h, "link", "set", "eth0", state, (char *)NULL);
  if (rc == 0) {
    if (up)
      rc = net_ip(net, "-n", h, "link", "set", "eth0", state, (char *)NULL);
    else
      rc = net_ip(net, "-n", sw, "link", "set", port, state, (char *)NULL);
  }
  return rc;
}
