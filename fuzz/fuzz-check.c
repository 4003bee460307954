/* SPDX-License-Identifier: BSD-3-Clause */
/* nbdkit-vhd fuzzing: vhdtool check.
 *
 * The check-mode open exactly as tools/cmd-check.c runs it (read-only,
 * no locks, a problem handler collecting every problem), then what it
 * prints: each layer's type and path, each problem.  A plain input is
 * one file; an input starting with FUZZ_CHECK_MAGIC is the container of
 * common.h after the magic, so parents are checked too.  An input
 * starting with VHDX_FUZZ_MAGIC is a VHDX one (vhdx-template.h): the
 * check runs on a.vhdx and the parents the template made.
 */
#include <config.h>

#include <stdlib.h>
#include <string.h>

#include "common.h"
#include "vhdx-template.h"

struct report {
  size_t n, bytes;
};

static void
collect (void *opaque, const char *file, const char *structure,
         const char *what)
{
  struct report *r = opaque;

  /* What cmd-check.c does with them: copy and later print. */
  r->n++;
  r->bytes += strlen (file) + strlen (structure) + strlen (what);
}

int
LLVMFuzzerTestOneInput (const uint8_t *data, size_t size)
{
  struct report r = { 0, 0 };
  struct vhd_open_options o = {
    .readonly = true, .no_lock = true, .problem = collect,
    .problem_opaque = &r,
  };
  struct vhd_chain *c = NULL;
  size_t ml = strlen (FUZZ_CHECK_MAGIC);
  unsigned k;

  bool vhdx = vhdx_fuzz_input (data, size);
  const char *top = FUZZ_NAMES[0];

  fuzz_quiet ();
  if (vhdx) {
    struct vhdx_fuzz x;

    vhdx_fuzz_build (data, size, &x);
    top = VHDX_FUZZ_NAMES[0];
  }
  else if (size >= ml && memcmp (data, FUZZ_CHECK_MAGIC, ml) == 0) {
    uint8_t flags;

    fuzz_unpack (data + ml, size - ml, &flags);
  }
  else {
    fuzz_write_file (FUZZ_NAMES[0], data, size);
    fuzz_unlink (FUZZ_NAMES[1]);
    fuzz_unlink (FUZZ_NAMES[2]);
    for (k = 0; k < VHDX_FUZZ_FILES; k++)
      fuzz_unlink (VHDX_FUZZ_NAMES[k]);
  }
  if (vhd_chain_open (fuzz_path (0, top), &o, &c) == 0) {
    for (k = 0; k < vhd_chain_depth (c); k++) {
      r.bytes += strlen (vhd_layer_type (vhd_chain_layer (c, k)));
      r.bytes += strlen (vhd_layer_path (vhd_chain_layer (c, k)));
    }
    vhd_chain_close (c);
  }
  if (vhdx)
    vhdx_fuzz_assert_intact ();
  return 0;
}
