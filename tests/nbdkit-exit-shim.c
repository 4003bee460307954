/* SPDX-License-Identifier: BSD-3-Clause */
/* Preloaded into nbdkit by sanitizer runs only (tests/functions.sh).
 *
 * With the ASan runtime preloaded, nbdkit 1.32 on Debian 12 often never
 * finishes exiting: at exit, a destructor of libp11-kit (loaded through
 * gnutls) calls freelocale(), which waits forever on glibc's setlocale
 * lock, whose reader count has gone negative (gdb: exit -> _dl_fini ->
 * p11-kit -> freelocale -> pthread_rwlock_wrlock; the lock shows
 * __readers = 0xfffffffa).  nbdkit's own file plugin hangs the same
 * way, so the bug is not in the code under test.  It happens on failing
 * exits (half the suite checks that bad input makes nbdkit exit
 * non-zero) and on clean ones alike.
 *
 * The shim therefore lets every exit run the atexit handlers nbdkit and
 * its plugins register (socket and pidfile clean-up) and then ends the
 * process with _exit before the shared-library destructors: the handler
 * below is registered when main starts, after ld.so registered its own
 * destructor runner, so it runs before that.  Plugin and filter unload
 * callbacks are unaffected: nbdkit calls them itself before exiting. */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

typedef int main_fn (int, char **, char **);
typedef int start_fn (main_fn *, int, char **, void (*) (void),
                      void (*) (void), void (*) (void), void *);

static main_fn *real_main;

static void
skip_destructors (int status, void *unused)
{
  fflush (NULL);
  _exit (status);
}

static int
main_with_early_exit (int argc, char **argv, char **envp)
{
  on_exit (skip_destructors, NULL);
  return real_main (argc, argv, envp);
}

int
__libc_start_main (main_fn *main, int argc, char **argv,
                   void (*init) (void), void (*fini) (void),
                   void (*rtld_fini) (void), void *stack_end)
{
  start_fn *real_start = (start_fn *) dlsym (RTLD_NEXT, "__libc_start_main");

  real_main = main;
  return real_start (main_with_early_exit, argc, argv, init, fini,
                     rtld_fini, stack_end);
}
