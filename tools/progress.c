/* SPDX-License-Identifier: BSD-3-Clause */
/* vhdtool: the -p progress bar, drawn on stderr only when stderr is a
 * terminal (like qemu-img -p), so logs and pipes stay clean. */
#include <config.h>

#include <unistd.h>

#include "vhdtool.h"

void
progress_init (struct progress *p, bool wanted)
{
  p->enabled = wanted && isatty (STDERR_FILENO);
  p->shown = -1;
}

/* vhd_progress_fn: redraw only when the shown value changes. */
void
progress_update (void *opaque, uint64_t done, uint64_t total)
{
  struct progress *p = opaque;
  int permyriad = total ? (int) (done * 10000 / total) : 10000;

  if (!p->enabled || permyriad == p->shown)
    return;
  p->shown = permyriad;
  fprintf (stderr, "    (%d.%02d/100%%)\r", permyriad / 100, permyriad % 100);
  fflush (stderr);
}

void
progress_done (struct progress *p)
{
  if (!p->enabled)
    return;
  if (p->shown >= 0)
    progress_update (p, 1, 1);
  fputc ('\n', stderr);
}
