/* SPDX-License-Identifier: BSD-3-Clause */
/* nbdkit-vhd: error, warning and debug messages from the library.
 *
 * The library never prints by itself when embedded: the plugin routes
 * messages to nbdkit_error/nbdkit_debug, vhdtool to stderr.
 */
#include <config.h>

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>

#include "internal.h"

static void
default_handler (enum vhd_msg_level level, const char *msg)
{
  if (level == VHD_MSG_DEBUG)
    return;
  fprintf (stderr, "%s%s\n", level == VHD_MSG_WARNING ? "warning: " : "",
           msg);
}

static vhd_message_fn handler = default_handler;

void
vhd_set_message_handler (vhd_message_fn fn)
{
  handler = fn ? fn : default_handler;
}

static void
emit (enum vhd_msg_level level, const char *fs, va_list args)
{
  int saved_errno = errno;      /* callers rely on errno surviving */
  char msg[1024];

  vsnprintf (msg, sizeof msg, fs, args);
  handler (level, msg);
  errno = saved_errno;
}

#define DEFINE_MESSAGE_FN(name, level) \
  void name (const char *fs, ...)      \
  {                                    \
    va_list args;                      \
    va_start (args, fs);               \
    emit (level, fs, args);            \
    va_end (args);                     \
  }

DEFINE_MESSAGE_FN (vhd_error, VHD_MSG_ERROR)
DEFINE_MESSAGE_FN (vhd_warning, VHD_MSG_WARNING)
DEFINE_MESSAGE_FN (vhd_debug, VHD_MSG_DEBUG)
