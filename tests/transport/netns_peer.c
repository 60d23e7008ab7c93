/*
 * The server of tests/transport/test_netns.c, started inside a namespace
 * host with tr_netns_spawn:
 *
 *   netns_peer serve ADDR PORT
 *
 * listens on ADDR:PORT and answers every connection's first line L with
 * "echo L\n", then closes it, until it is killed.  It binds ADDR itself, so
 * it can only start where ADDR is one of the host's own addresses.
 * Prints nothing on success; errors go to stderr with exit status 1.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

static int die(const char *what) {
  fprintf(stderr, "netns_peer: %s: %s\n", what, strerror(errno));
  return 1;
}

/* One connection: reads up to the first newline (or 255 bytes), answers. */
static void answer(int fd) {
  char line[256];
  size_t n = 0;
  while (n < sizeof line - 1) {
    ssize_t r = read(fd, line + n, 1);
    if (r < 0 && errno == EINTR)
      continue;
    if (r <= 0 || line[n] == '\n')
      break;
    n++;
  }
  char reply[300];
  int len = snprintf(reply, sizeof reply, "echo %.*s\n", (int)n, line);
  for (int off = 0; off < len;) {
    ssize_t w = write(fd, reply + off, (size_t)(len - off));
    if (w < 0 && errno == EINTR)
      continue;
    if (w <= 0)
      break;
    off += (int)w;
  }
}

int main(int argc, char **argv) {
  if (argc != 4 || strcmp(argv[1], "serve") != 0) {
    fprintf(stderr, "usage: netns_peer serve ADDR PORT\n");
    return 2;
  }
  struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)atoi(argv[3]))};
  if (inet_pton(AF_INET, argv[2], &sa.sin_addr) != 1) {
    fprintf(stderr, "netns_peer: bad address %s\n", argv[2]);
    return 2;
  }
  int ls = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  int one = 1;
  if (ls < 0)
    return die("socket");
  if (setsockopt(ls, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one) != 0)
    return die("SO_REUSEADDR");
  if (bind(ls, (struct sockaddr *)&sa, sizeof sa) != 0)
    return die("bind");
  if (listen(ls, 16) != 0)
    return die("listen");
  for (;;) {
    int c = accept4(ls, NULL, NULL, SOCK_CLOEXEC);
    if (c < 0) {
      if (errno == EINTR || errno == ECONNABORTED)
        continue;
      return die("accept");
    }
    answer(c);
    close(c);
  }
}
